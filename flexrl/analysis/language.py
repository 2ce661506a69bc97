"""What a dataset's agents were told and what they did: per episode, its instruction, the
description of its measured motion and the feedback score (flexrl/language/feedback.py)."""

from __future__ import annotations

import numpy as np

from flexrl.analysis.dataset import HUMANOID_DT, NotApplicable, tracking_signals
from flexrl.analysis.tables import Table
from flexrl.store import Dataset


def episode_feedback(ds: Dataset) -> list[dict]:
    """Per told episode (in dataset order): its index, instruction and feedback as JSON."""
    from flexrl.language.feedback import judge, motion_of

    told = [i for i, text in enumerate(ds.episode_instructions) if text is not None]
    if not told:
        raise NotApplicable(
            f"no episode of {ds.ref} carries an instruction (collect with --instructions, or "
            "flexrl data relabel)"
        )
    signals = tracking_signals(ds)  # refuses data that is not a Humanoid skill's
    terminated = ds.array("terminations")
    starts, lengths = ds.episode_starts, ds.episode_lengths
    out = []
    for i in told:
        steps = slice(int(starts[i]), int(starts[i] + lengths[i]))
        measured, commanded = signals.measured[steps], signals.commanded[steps]
        fell = bool(terminated[steps][-1])
        motion = motion_of(measured[:, :2], measured[:, 2], commanded, fell, HUMANOID_DT)
        out.append({"episode": i, **judge(ds.episode_instructions[i], motion).as_json()})
    return out


def instruction_table(ds: Dataset, max_rows: int = 40) -> Table:
    """Per told episode: instruction, what the body did, similarity, followed (first rows)."""
    rows = [
        [f["episode"], f["instruction"], f["description"], f["similarity"], f["success"]]
        for f in episode_feedback(ds)
    ]
    followed = np.mean([r[4] for r in rows])
    note = (
        f"{len(rows)} told episodes, {followed:.0%} followed (tracked within 0.25 m/s and "
        "0.2 rad/s, no fall); similarity: cosine of instruction and description in MiniLM's "
        f"space{'; first ' + str(max_rows) + ' shown' if len(rows) > max_rows else ''}"
    )
    columns = ["episode", "instruction", "what the body did", "similarity", "followed"]
    return Table("Instructions and what the body did", columns, rows[:max_rows], note=note)
