"""Ranking and summarising trials: shared by `status`, `results` and the end of `submit`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flexrl.orchestrate.records import SweepRecord, TrialDef, TrialState, TrialStateName


@dataclass
class RankedTrial:
    rank: int
    index: int
    params: dict[str, Any]
    seed: int
    metric: float
    run_id: str | None
    best: bool


def rank(
    record: SweepRecord, trials: list[TrialDef], states: list[TrialState]
) -> list[RankedTrial]:
    """Succeeded trials with the metric, best first (per the metric's goal)."""
    done = [
        (t, s)
        for t, s in zip(trials, states, strict=True)
        if s.state == TrialStateName.SUCCEEDED and s.metric is not None
    ]
    reverse = record.metric.goal == "maximize"
    done.sort(
        key=lambda ts: (ts[1].metric, -ts[0].index if reverse else ts[0].index), reverse=reverse
    )
    return [
        RankedTrial(i + 1, t.index, t.params, t.seed, float(s.metric or 0.0), s.run_id, i == 0)
        for i, (t, s) in enumerate(done)
    ]


def counts(states: list[str]) -> dict[str, int]:
    result: dict[str, int] = {}
    for s in states:
        result[s] = result.get(s, 0) + 1
    return result


def format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in params.items()) or "-"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
