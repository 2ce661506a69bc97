"""Learning curves of several runs, or of a sweep, on one plot with seeds aggregated.

Runs are read from `workspace/runs/<id>/metrics.csv` (columns: step, time_s, then metric
names, one row per logged update). Runs that differ only by seed form one group, drawn as
the mean over seeds with a ± 1 std band:
- in a sweep, the trials of one parameter combination (`TrialDef.config`) are a group;
- for loose runs, the group is the run kind plus its recipe snapshot with `seed` removed
  (so two seeds of one recipe aggregate, while a changed learning rate does not).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from matplotlib.figure import Figure

from flexrl.analysis.tables import Table
from flexrl.errors import FlexrlError
from flexrl.orchestrate.records import SweepStore
from flexrl.workspace import RunRecord, Workspace
from flexrl.workspace.runs import METRICS_FILE, RECIPE_FILE


@dataclass
class Curve:
    """One metric of one run: x (the `step` column) and y, rows where it was logged."""

    run_id: str
    seed: int | None
    x: np.ndarray
    y: np.ndarray


@dataclass
class CurveGroup:
    """Runs that differ only by seed."""

    label: str
    curves: list[Curve] = field(default_factory=list)

    @property
    def seeds(self) -> list[int | None]:
        return [c.seed for c in self.curves]

    def aggregate(self, points: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, mean, std) over seeds on a shared grid spanning the steps all seeds reached,
        each curve linearly interpolated onto it (seeds log at different steps)."""
        usable = [c for c in self.curves if len(c.x)]
        if not usable:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        if len(usable) == 1:
            c = usable[0]
            return c.x.astype(float), c.y.astype(float), np.zeros(len(c.y))
        lo = max(float(c.x.min()) for c in usable)
        hi = min(float(c.x.max()) for c in usable)
        if hi < lo:  # no overlap: nothing can be averaged honestly
            return np.zeros(0), np.zeros(0), np.zeros(0)
        grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
        ys = np.stack([np.interp(grid, c.x, c.y) for c in usable])
        return grid, ys.mean(0), ys.std(0)

    def final(self) -> tuple[float, float]:
        """Mean and std over seeds of each run's last logged value."""
        last = np.array([c.y[-1] for c in self.curves if len(c.y)], dtype=float)
        if not len(last):
            return math.nan, math.nan
        return float(last.mean()), float(last.std())


def read_metrics(run_id: str, workspace: str | Path) -> dict[str, np.ndarray]:
    """Every column of a run's metrics.csv as float arrays (NaN where a row left it empty)."""
    path = Workspace(workspace).run_dir(run_id) / METRICS_FILE
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {
        col: np.array([float(r[col]) if r.get(col) not in (None, "") else math.nan for r in rows])
        for col in rows[0]
    }


def run_curve(record: RunRecord, metric: str, workspace: str | Path) -> Curve:
    columns = read_metrics(record.id, workspace)
    if metric not in columns:
        known = ", ".join(c for c in columns if c not in ("step", "time_s")) or "none"
        raise FlexrlError(f"run {record.id} logged no metric {metric!r} (it logged: {known})")
    x, y = columns["step"], columns[metric]
    keep = ~np.isnan(y)  # PPO leaves episodic_return empty in updates where no episode ended
    return Curve(record.id, record.seed, x[keep], y[keep])


def _recipe_without_seed(workspace: Workspace, run_id: str) -> str:
    path = workspace.run_dir(run_id) / RECIPE_FILE
    if not path.is_file():
        return ""
    recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if isinstance(recipe, dict):
        recipe.pop("seed", None)
        recipe.pop("name", None)  # run names often carry the seed ("walk-s1")
    return yaml.safe_dump(recipe, sort_keys=True)


def group_runs(
    runs: Sequence[str], metric: str, workspace: str | Path, labels: Sequence[str] | None = None
) -> list[CurveGroup]:
    """Resolve runs (ids, id prefixes or names) and group those that differ only by seed.
    A group is labelled by its first run's name unless `labels` (one per group) says."""
    ws = Workspace(workspace)
    groups: dict[tuple[str, str], CurveGroup] = {}
    for ref in runs:
        record = ws.resolve_run(ref)
        key = (record.kind, _recipe_without_seed(ws, record.id))
        if key == (record.kind, ""):  # no recipe snapshot: only the name can tell
            key = (record.kind, record.name)
        group = groups.setdefault(key, CurveGroup(record.name))
        group.curves.append(run_curve(record, metric, workspace))
    result = list(groups.values())
    if labels is not None:
        for group, label in zip(result, labels, strict=False):
            group.label = label
    return result


def sweep_groups(sweep_id: str, metric: str, workspace: str | Path) -> list[CurveGroup]:
    """The finished trials of a sweep, one group per parameter combination (seeds pooled).
    Trials without a run yet (pending, or failed before starting) are left out."""
    store = SweepStore(workspace)
    record = store.load(sweep_id)
    ws = Workspace(workspace)
    groups: dict[int, CurveGroup] = {}
    for trial, state in zip(store.trials(record), store.states(record), strict=True):
        run_id = state.run_id or next(
            (a.run_id for a in reversed(state.attempts) if a.run_id), None
        )
        if run_id is None:
            continue
        label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in trial.params.items()) or "base"
        group = groups.setdefault(trial.config, CurveGroup(label))
        group.curves.append(run_curve(ws.load_run(run_id), metric, workspace))
    if not groups:
        raise FlexrlError(f"sweep {sweep_id} has no trial with a run yet")
    return [groups[c] for c in sorted(groups)]


def learning_curves_figure(
    groups: Sequence[CurveGroup], metric: str = "episodic_return", title: str | None = None
) -> Figure:
    """Mean over seeds (line) ± 1 std (band) of every group, on one axes."""
    fig = Figure(figsize=(9, 4.8), layout="constrained")
    ax = fig.subplots()
    for i, group in enumerate(groups):
        x, mean, std = group.aggregate()
        colour = f"C{i % 10}"
        n = len(group.curves)
        ax.plot(x, mean, color=colour, label=f"{group.label} (n={n} seed{'s' * (n != 1)})")
        if n > 1:
            ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2)
    ax.plot([], [], " ", label="band: ± 1 std over seeds")
    ax.set(
        title=title or f"Learning curves: {metric}",
        xlabel="environment steps (or optimiser steps for offline runs)",
        ylabel=metric.replace("_", " "),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def curves_table(groups: Sequence[CurveGroup], metric: str = "episodic_return") -> Table:
    """Per group: seeds, runs, and the last logged value (mean ± std over seeds)."""
    rows = []
    for g in groups:
        mean, std = g.final()
        seeds = ", ".join("-" if s is None else str(s) for s in g.seeds)
        rows.append([g.label, seeds, len(g.curves), mean, std])
    cols = ["group", "seeds", "runs", f"final {metric} mean", "std"]
    return Table(f"Final {metric} per group", cols, rows)
