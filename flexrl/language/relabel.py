"""Hindsight instructions: an episode's goal commands said back in words, so datasets collected
before instructions existed can train language-conditioned models.

    instruction_for(goals)   # [T, 3] -> "walk forward at 0.62 m/s while turning left at
                             #            0.30 rad/s, then stop"
    relabel(open_dataset("goal-data@v3", ws), "goal-told", ws, lineage)   # each episode told

Each command is said in the grammar's command syntax (`grammar.command_phrase`), which the
parser reads back exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flexrl.errors import FlexrlError
from flexrl.language.grammar import command_phrase
from flexrl.store import Dataset, Lineage, Manifest, ShardWriter


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
