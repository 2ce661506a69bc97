"""Ranking and summarising trials: shared by `status`, `results` and the end of `submit`.

A sweep ranks configurations, not trials: one (config, seed) trial is one draw, and the best
trial is mostly the luckiest seed. Trials of the same parameters are aggregated over their seeds
(mean ± sample std, and the interquartile mean that rliable recommends: the mean of the middle
50% of the values, scipy's `trim_mean(x, 0.25)`; with fewer than 4 seeds it trims nothing and
equals the mean) and configurations are ranked by their IQM.

The value of a trial is the sweep's metric from its run, except that the last training return
(`episodic_return`: a noisy mean of the last episodes, under exploration noise) gives way to the
evaluation return (`eval_return` of a `flexrl eval` run of the trial's run) when every ranked
trial has been evaluated: all configurations are compared on the same measurement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flexrl.orchestrate.records import SweepRecord, TrialDef, TrialState, TrialStateName
from flexrl.workspace import ArtifactKind, RunStatus, Workspace

TRAINING_RETURN = "episodic_return"  # what `flexrl train` logs
EVAL_RETURN = "eval_return"  # what `flexrl eval` logs


@dataclass
class RankedTrial:
    rank: int
    index: int
    params: dict[str, Any]
    seed: int
    metric: float
    run_id: str | None


@dataclass
class RankedConfig:
    """One configuration (parameters) over its seeds."""

    rank: int
    params: dict[str, Any]
    trials: list[RankedTrial]  # its seeds, in seed order
    iqm: float
    mean: float
    std: float | None  # sample std (ddof 1); None with one seed
    best: bool

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "trials"},
            "seeds": [t.seed for t in self.trials],
            "values": [t.metric for t in self.trials],
            "trials": [t.index for t in self.trials],
            "runs": [t.run_id for t in self.trials],
        }


def iqm(values: list[float]) -> float:
    """Interquartile mean: drop the lowest and highest quarter (rounded down), average the rest
    (as rliable's `metrics.aggregate_iqm`, i.e. `scipy.stats.trim_mean(values, 0.25)`)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    cut = int(0.25 * len(x))
    return float(x[cut : len(x) - cut].mean())


def trial_values(
    record: SweepRecord, states: list[TrialState], workspace: str | Path
) -> tuple[str, dict[int, float]]:
    """(metric used, succeeded trial index -> value): see the module docstring."""
    values = {
        s.index: float(s.metric)
        for s in states
        if s.state == TrialStateName.SUCCEEDED and s.metric is not None
    }
    if record.metric.name != TRAINING_RETURN or not values:
        return record.metric.name, values
    evaluated = _eval_returns(Workspace(workspace))
    runs = {s.index: s.run_id for s in states if s.index in values}
    if all(runs[i] in evaluated for i in values):
        return EVAL_RETURN, {i: evaluated[runs[i]] for i in values}  # type: ignore[index]
    return record.metric.name, values


def _eval_returns(ws: Workspace) -> dict[str, float]:
    """Source run id -> eval_return of its newest completed `flexrl eval` run."""
    out: dict[str, float] = {}
    for run in ws.list_runs():  # oldest first: newer evaluations win
        if run.kind != "eval" or run.status != RunStatus.COMPLETED:
            continue
        value = run.metrics_last.get(EVAL_RETURN)
        for a in run.inputs:
            if a.kind == ArtifactKind.RUN and a.role == "source" and value is not None:
                out[a.ref] = float(value)
    return out


def rank(
    record: SweepRecord,
    trials: list[TrialDef],
    states: list[TrialState],
    values: dict[int, float] | None = None,
) -> list[RankedTrial]:
    """Succeeded trials with a value, best first (per the metric's goal); `values` (from
    `trial_values`) default to each trial's recorded metric."""
    if values is None:
        values = {
            s.index: float(s.metric)
            for s in states
            if s.state == TrialStateName.SUCCEEDED and s.metric is not None
        }
    run_ids = {s.index: s.run_id for s in states}
    done = [t for t in trials if t.index in values]
    reverse = record.metric.goal == "maximize"
    done.sort(key=lambda t: (values[t.index], -t.index if reverse else t.index), reverse=reverse)
    return [
        RankedTrial(i + 1, t.index, t.params, t.seed, values[t.index], run_ids.get(t.index))
        for i, t in enumerate(done)
    ]


def rank_configs(record: SweepRecord, ranked: list[RankedTrial]) -> list[RankedConfig]:
    """Trials grouped by parameters, ranked by the IQM over their seeds (ties: by mean, then
    by the first trial's index)."""
    groups: dict[str, list[RankedTrial]] = {}
    for t in sorted(ranked, key=lambda t: t.index):
        groups.setdefault(repr(sorted(t.params.items())), []).append(t)
    configs = []
    for members in groups.values():
        members.sort(key=lambda t: t.seed)
        x = [t.metric for t in members]
        std = float(np.std(x, ddof=1)) if len(x) > 1 else None
        configs.append(
            RankedConfig(0, members[0].params, members, iqm(x), float(np.mean(x)), std, False)
        )
    sign = -1.0 if record.metric.goal == "maximize" else 1.0
    configs.sort(key=lambda c: (sign * c.iqm, sign * c.mean, c.trials[0].index))
    for i, c in enumerate(configs):
        c.rank, c.best = i + 1, i == 0
    return configs


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
