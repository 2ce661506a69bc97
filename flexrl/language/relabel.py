"""Hindsight instructions: an episode's goal commands said back in words, so datasets collected
before instructions existed can train language-conditioned models.

    instruction_for(goals)   # [T, 3] -> "walk forward at 0.62 m/s while turning left at
                             #            0.30 rad/s, then stop"
    relabel(open_dataset("goal-data@v3", ws), "goal-told", ws, lineage)   # each episode told

The words are the grammar's (flexrl/language/grammar.py), with the numbers the commands had.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flexrl.errors import FlexrlError
from flexrl.store import Dataset, Lineage, Manifest, ShardWriter

MOVING = 0.05  # m/s or rad/s below which a command component is "not asked"


def command_phrase(command: np.ndarray) -> str:
    """One command [vx, vy, yaw_rate] as an instruction."""
    vx, vy, yaw = (float(c) for c in command)
    parts = []
    if abs(vx) >= MOVING:
        parts.append(f"walk {'forward' if vx > 0 else 'backwards'} at {abs(vx):.2f} m/s")
    if abs(vy) >= MOVING:
        side = "left" if vy > 0 else "right"
        verb = "drifting" if parts else "sidestep"
        parts.append(f"{verb} to the {side} at {abs(vy):.2f} m/s")
    if abs(yaw) >= MOVING:
        verb = "while turning" if parts else "turn"
        parts.append(f"{verb} {'left' if yaw > 0 else 'right'} at {abs(yaw):.2f} rad/s")
    return " ".join(parts) if parts else "stop"


def instruction_for(goals: np.ndarray) -> str:
    """The commands of an episode [T, 3] in words, in order ("..., then ...")."""
    changes = np.flatnonzero(np.any(np.diff(goals, axis=0) != 0, axis=1)) + 1
    phrases = [command_phrase(goals[start]) for start in np.concatenate([[0], changes])]
    return ", then ".join(phrases)


def check_relabel(source: Dataset, name: str) -> None:
    """Refuse a relabelling that cannot be done, before anything is written."""
    if name == source.name:
        raise FlexrlError(f"relabel {source.ref} into a dataset of another name, not {name!r}")
    if source.schema.goals is None:
        raise FlexrlError(f"{source.ref} has no goal commands to say in words")


def relabel(source: Dataset, name: str, workspace: str | Path, lineage: Lineage) -> Manifest:
    """Copy `source` into dataset `name` (a new version of it) with every episode's instruction
    said from its goal commands."""
    check_relabel(source, name)
    message = f"instructions said from the commands of {source.ref}"
    # The writer commits on leaving the block, or deletes what it wrote if anything failed.
    with ShardWriter(
        name, workspace, lineage=lineage, allow_nonfinite=True, message=message
    ) as writer:
        for episode in source:
            assert episode.goals is not None
            episode.instruction = instruction_for(episode.goals)
            writer.add(episode)
    (manifest,) = writer.committed
    return manifest
