"""What is in a dataset version: returns, lengths, tasks, where the agent went, what it did.

Every function takes a `Dataset` (or a reference plus a workspace) and returns a matplotlib
`Figure` or a `Table`. Figures are built with `matplotlib.figure.Figure`, not pyplot, so they
need no GUI backend and hold no global state (the CLI renders them headless; Jupyter shows
them inline). Only the store's public API is used.

Humanoid datasets written by `flexrl collect` carry `goals` [T, 3] (the commanded
[vx, vy, yaw_rate]) and `infos/lin_vel` [T, 2] (heading-frame forward/left velocity, m/s) and
`infos/yaw_rate` [T] (rad/s). Plots that need them raise `NotApplicable` on other datasets;
`why_not_humanoid(ds)` says beforehand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from flexrl.analysis.tables import Table
from flexrl.errors import FlexrlError
from flexrl.store import Dataset, open_dataset

# Humanoid-v5: MuJoCo timestep 0.003 s x frame_skip 5 = one env step.
HUMANOID_DT = 0.015
# Humanoid-v5 observations start with qpos[2:]: torso height z, then its quaternion (w, x, y, z).
_QUAT = slice(1, 5)
_HUMANOID_OBS_MIN = 348
# Humanoid-v5's 17 actuators in action order (gymnasium humanoid.xml).
HUMANOID_JOINTS = (
    "abdomen_y",
    "abdomen_z",
    "abdomen_x",
    "right_hip_x",
    "right_hip_z",
    "right_hip_y",
    "right_knee",
    "left_hip_x",
    "left_hip_z",
    "left_hip_y",
    "left_knee",
    "right_shoulder1",
    "right_shoulder2",
    "right_elbow",
    "left_shoulder1",
    "left_shoulder2",
    "left_elbow",
)


class NotApplicable(FlexrlError):
    """This analysis needs data the dataset does not have (e.g. goals on a pendulum dataset)."""


DatasetLike = Dataset | str


def load(ref: DatasetLike, workspace: str | Path | None = None) -> Dataset:
    """A `Dataset` as is, or open a reference (`name`, `name@v3`, `name@tag`)."""
    return ref if isinstance(ref, Dataset) else open_dataset(ref, workspace)


# -- summaries ---------------------------------------------------------------------------------


def summary_table(ds: Dataset) -> Table:
    """One row per fact: version, digest, episodes, steps, returns, lengths, schema."""
    stats = ds.stats()
    r, n = stats.returns, stats.lengths
    schema = ds.schema
    rows: list[list[object]] = [
        ["version", f"{ds.ref} ({ds.digest[:19]})"],
        ["created (UTC)", ds.manifest.created_at[:19].replace("T", " ")],
        ["episodes", f"{stats.episodes} ({stats.terminated} ended by termination)"],
        ["steps", str(stats.steps)],
        ["return", f"mean {r.mean:.3f} ± {r.std:.3f}, min {r.min:.3f}, max {r.max:.3f}"],
        [
            "length (steps)",
            f"mean {n.mean:.1f}, min {n.min:.0f}, median {n.p50:.0f}, max {n.max:.0f}",
        ],
        ["observations", schema.observations.describe()],
        ["actions", schema.actions.describe()],
        ["goals", schema.goals.describe() if schema.goals else "none"],
        ["infos", ", ".join(k for k, _ in schema.infos) if schema.infos else "none"],
    ]
    producer = ds.manifest.lineage.producer_run
    if producer:
        rows.append(["produced by run", producer])
    return Table(f"{ds.ref}", ["field", "value"], rows)


def return_length_figure(ds: Dataset, bins: int = 30) -> Figure:
    """Histograms of episode returns and episode lengths (one count per episode)."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_r, ax_l = fig.subplots(1, 2)
    returns, lengths = ds.episode_returns, ds.episode_lengths
    ax_r.hist(returns, bins=bins, color="tab:blue", edgecolor="white", label="episodes")
    if len(returns):
        ax_r.axvline(returns.mean(), color="black", ls="--", label=f"mean {returns.mean():.2f}")
    ax_r.set(title="Episode return", xlabel="return (sum of rewards)", ylabel="episodes")
    ax_l.hist(lengths, bins=bins, color="tab:orange", edgecolor="white", label="episodes")
    if len(lengths):
        ax_l.axvline(lengths.mean(), color="black", ls="--", label=f"mean {lengths.mean():.1f}")
    ax_l.set(title="Episode length", xlabel="length (env steps)", ylabel="episodes")
    for ax in (ax_r, ax_l):
        ax.legend()
    fig.suptitle(f"{ds.ref}: {len(ds)} episodes, {ds.num_steps} steps")
    return fig


def per_task_table(ds: Dataset) -> Table:
    """Episodes, steps and return statistics for each task (`-` for episodes without one)."""
    rows = [
        [
            t.task or "-",
            t.episodes,
            t.steps,
            t.returns.mean,
            t.returns.std,
            t.returns.min,
            t.returns.max,
        ]
        for t in ds.stats().per_task
    ]
    columns = ["task", "episodes", "steps", "return mean", "return std", "return min", "return max"]
    return Table("Per task", columns, rows)


def per_policy_table(ds: Dataset) -> Table:
    """Episodes, steps and returns for each producing policy, in order of first appearance:
    a version that appended episodes from another policy shows one row per policy."""
    rows = [
        [
            "-" if p.policy is None else p.policy,
            p.episodes,
            p.steps,
            p.returns.mean,
            p.returns.std,
            p.returns.min,
            p.returns.max,
        ]
        for p in ds.stats().per_policy
    ]
    columns = ["policy", "episodes", "steps", "return mean", "return std", "return min",
               "return max"]  # fmt: skip
    note = "policy: the checkpoint's sha256 digest, 'random', or '-' when none was recorded"
    return Table("Per producing policy", columns, rows, note=note)


def per_task_figure(ds: Dataset) -> Figure:
    """Return distribution of each task side by side (box plot, points overlaid)."""
    tasks = ds.episode_tasks
    names = sorted({t for t in tasks if t is not None}) + (
        ["(none)"] if any(t is None for t in tasks) else []
    )
    labels = np.array(["(none)" if t is None else t for t in tasks], dtype=object)
    groups = [ds.episode_returns[labels == name] for name in names]
    fig = Figure(figsize=(max(5.0, 1.6 * len(names) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    ax.boxplot(
        groups, tick_labels=[f"{n}\n({len(g)} ep.)" for n, g in zip(names, groups, strict=True)]
    )
    rng = np.random.default_rng(0)  # jitter only, so the plot is the same every time
    for i, g in enumerate(groups, start=1):
        ax.scatter(
            i + rng.uniform(-0.15, 0.15, len(g)),
            g,
            s=8,
            alpha=0.5,
            color="tab:blue",
            label="episode" if i == 1 else None,
        )
    ax.set(title="Return per task", xlabel="task", ylabel="return (sum of rewards)")
    if groups:
        ax.legend()
    return fig


# -- Humanoid: where the torso went and how well it tracked the command ----------------------


def why_not_humanoid(ds: Dataset) -> str | None:
    """None when the dataset has what the Humanoid plots need, else the reason it does not."""
    schema = ds.schema
    infos = dict(schema.infos) if schema.infos else {}
    if schema.goals is None or tuple(schema.goals.shape) != (3,):
        return f"{ds.ref} has no [vx, vy, yaw_rate] goal commands (not a Humanoid skill dataset)"
    if "lin_vel" not in infos or "yaw_rate" not in infos:
        return f"{ds.ref} stores no infos/lin_vel and infos/yaw_rate (measured velocities)"
    return None


def _require_humanoid(ds: Dataset) -> None:
    reason = why_not_humanoid(ds)
    if reason:
        raise NotApplicable(reason)


def _heading_yaw(quat: np.ndarray) -> np.ndarray:
    """Yaw of the body x axis on the ground, as flexrl.envs.rewards.heading_yaw computes it
    (copied: importing flexrl.envs would pull in MuJoCo for a plot)."""
    w, x, y, z = quat[:, 0], quat[:, 1], quat[:, 2], quat[:, 3]
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def torso_xy(ds: Dataset, episode: int, dt: float = HUMANOID_DT) -> np.ndarray:
    """[T+1, 2] torso x-y path (m) of one episode, starting at the origin.

    Humanoid-v5 observations exclude x and y, so the path is integrated from what the store
    keeps: `infos/lin_vel[t]` is the torso velocity measured after step t in the heading frame
    of the torso at that moment, and that torso orientation is in the next observation
    (`observations[t+1][1:5]`, or the final observation for the last step). Rotating by that
    exact heading makes the world-frame velocity faithful; the only error is the one-sample-
    per-step integration (dt = 0.015 s). Without the Humanoid observation layout the heading
    is integrated from `infos/yaw_rate` instead.
    """
    _require_humanoid(ds)
    e = ds.episode(episode)
    lin_vel = np.asarray(e.infos["lin_vel"], dtype=np.float64)
    if e.observations.shape[1] >= _HUMANOID_OBS_MIN:
        after = np.concatenate([e.observations[1:], e.final_observation[None]])
        yaw = _heading_yaw(after[:, _QUAT].astype(np.float64))
    else:
        yaw = np.cumsum(np.asarray(e.infos["yaw_rate"], dtype=np.float64)) * dt
    c, s = np.cos(yaw), np.sin(yaw)
    world = np.stack(
        [c * lin_vel[:, 0] - s * lin_vel[:, 1], s * lin_vel[:, 0] + c * lin_vel[:, 1]], 1
    )
    return np.concatenate([np.zeros((1, 2)), np.cumsum(world * dt, axis=0)])


def trajectories_figure(ds: Dataset, max_episodes: int = 50, dt: float = HUMANOID_DT) -> Figure:
    """Torso x-y paths of the first `max_episodes` episodes, coloured by task, and where
    the dataset spends its time (a 2-D histogram of every plotted step)."""
    _require_humanoid(ds)
    n = min(len(ds), max_episodes)
    paths = [torso_xy(ds, i, dt) for i in range(n)]
    tasks = [t or "(none)" for t in ds.episode_tasks[:n]]
    colours = {t: f"C{i}" for i, t in enumerate(sorted(set(tasks)))}
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax, ax_h = fig.subplots(1, 2)
    for path, task in zip(paths, tasks, strict=True):
        ax.plot(path[:, 0], path[:, 1], color=colours[task], lw=1, alpha=0.7)
        ax.plot(path[-1, 0], path[-1, 1], "x", color=colours[task], ms=4)
    for task, colour in colours.items():
        ax.plot([], [], color=colour, label=task)
    ax.plot(0, 0, "ko", ms=4, label="start")
    ax.set(
        title=f"Torso x-y paths ({n} of {len(ds)} episodes, x = end)",
        xlabel="x (m, heading at reset = +x)",
        ylabel="y (m)",
    )
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize="small")
    points = np.concatenate(paths) if paths else np.zeros((0, 2))
    h = ax_h.hist2d(points[:, 0], points[:, 1], bins=40, cmap="viridis", cmin=1)
    fig.colorbar(h[3], ax=ax_h, label="steps")
    ax_h.set(title="State visitation (torso x-y)", xlabel="x (m)", ylabel="y (m)")
    ax_h.set_aspect("equal", adjustable="datalim")
    return fig


@dataclass
class TrackingSignals:
    """Measured and commanded velocities for every step of a version."""

    measured: np.ndarray  # [T, 3] forward m/s, left m/s, yaw rate rad/s
    commanded: np.ndarray  # [T, 3] the goal in force at that step


_COMPONENTS = (
    ("forward speed", "m/s"),
    ("lateral speed (left +)", "m/s"),
    ("yaw rate (left turn +)", "rad/s"),
)


def tracking_signals(ds: Dataset) -> TrackingSignals:
    _require_humanoid(ds)
    lin = ds.array("infos/lin_vel").astype(np.float64)
    yaw = ds.array("infos/yaw_rate").astype(np.float64).reshape(-1, 1)
    return TrackingSignals(np.concatenate([lin, yaw], 1), ds.array("goals").astype(np.float64))


def tracking_table(ds: Dataset) -> Table:
    """Per velocity component: commanded and measured mean, and the mean absolute error."""
    sig = tracking_signals(ds)
    rows = []
    for k, (name, unit) in enumerate(_COMPONENTS):
        m, c = sig.measured[:, k], sig.commanded[:, k]
        rows.append(
            [f"{name} ({unit})", float(c.mean()), float(m.mean()), float(np.abs(m - c).mean())]
        )
    columns = ["component", "commanded mean", "measured mean", "mean |error|"]
    return Table("Command tracking over all steps", columns, rows)


def tracking_figure(ds: Dataset, bins: int = 40) -> Figure:
    """Histograms of measured forward speed, lateral speed and yaw rate against the commanded
    goal, on shared bins, one panel per component."""
    sig = tracking_signals(ds)
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    for k, ax in enumerate(fig.subplots(1, 3)):
        name, unit = _COMPONENTS[k]
        m, c = sig.measured[:, k], sig.commanded[:, k]
        both = np.concatenate([m, c])
        edges = np.histogram_bin_edges(both, bins=bins) if len(both) else bins
        ax.hist(c, bins=edges, alpha=0.55, color="tab:gray", label="commanded (goal)")
        ax.hist(m, bins=edges, alpha=0.6, color="tab:green", label="measured")
        ax.set(title=name.capitalize(), xlabel=f"{name} ({unit})", ylabel="steps")
        ax.legend(fontsize="small")
    fig.suptitle(f"{ds.ref}: measured velocity vs commanded goal ({len(sig.measured)} steps)")
    return fig


# -- actions ----------------------------------------------------------------------------------


def joint_names(ds: Dataset) -> list[str]:
    """Humanoid actuator names when the action has 17 dims and goals, else `a0`, `a1`, ..."""
    dims = int(np.prod(ds.schema.actions.shape))
    if dims == len(HUMANOID_JOINTS) and why_not_humanoid(ds) is None:
        return list(HUMANOID_JOINTS)
    return [f"a{i}" for i in range(dims)]


def action_table(ds: Dataset) -> Table:
    """Per action dimension: mean, std, min, 5th/50th/95th percentile, max over every step."""
    actions = ds.array("actions").reshape(ds.num_steps, -1).astype(np.float64)
    rows = []
    for i, name in enumerate(joint_names(ds)):
        a = actions[:, i]
        if len(a):
            p5, p50, p95 = np.percentile(a, [5, 50, 95])
            rows.append([name, a.mean(), a.std(), a.min(), p5, p50, p95, a.max()])
        else:
            rows.append([name, *[float("nan")] * 7])
    cols = ["joint", "mean", "std", "min", "p5", "median", "p95", "max"]
    return Table(
        "Actions per joint (over all steps)",
        cols,
        [[r[0], *(float(v) for v in r[1:])] for r in rows],
    )


def action_figure(ds: Dataset) -> Figure:
    """Box plot of every action dimension (whiskers at the 5th and 95th percentiles)."""
    actions = ds.array("actions").reshape(ds.num_steps, -1).astype(np.float64)
    names = joint_names(ds)
    fig = Figure(figsize=(max(6.0, 0.55 * len(names) + 2), 4.2), layout="constrained")
    ax = fig.subplots()
    ax.boxplot(
        [actions[:, i] for i in range(len(names))],
        tick_labels=names,
        whis=(5, 95),
        showfliers=False,
        showmeans=True,
    )
    ax.plot([], [], "^", color="tab:green", label="mean")
    ax.plot([], [], color="tab:orange", label="median (box: 25-75 %, whiskers: 5-95 %)")
    ax.tick_params(axis="x", rotation=60)
    ax.set(
        title="Action distribution per joint",
        xlabel="joint (actuator)",
        ylabel="action (actuator control, env units)",
    )
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the boxes
    return fig


# -- two versions -----------------------------------------------------------------------------


@dataclass
class VersionDiff:
    old: str
    new: str
    prefix: bool  # the old version's shards are the first shards of the new one (same history)
    episodes_old: int
    episodes_new: int
    episodes_added: int  # episodes in new beyond old (when prefix), else the difference in count
    steps_added: int
    return_mean_old: float
    return_mean_new: float
    return_mean_added: float  # NaN when nothing was added
    added_returns: np.ndarray

    @property
    def return_shift(self) -> float:
        return self.return_mean_new - self.return_mean_old

    def table(self) -> Table:
        rows = [
            ["episodes", self.episodes_old, self.episodes_new, f"+{self.episodes_added}"],
            [
                "return mean",
                self.return_mean_old,
                self.return_mean_new,
                f"{self.return_shift:+.4g} (added: {self.return_mean_added:.4g})",
            ],
        ]
        note = None if self.prefix else "the versions do not share history: compared as wholes"
        return Table(f"{self.old} → {self.new}", ["", self.old, self.new, "change"], rows, note)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else float("nan")


def diff_versions(old: Dataset, new: Dataset) -> VersionDiff:
    """How `new` differs from `old`: episodes added and how the return distribution moved.

    Within one dataset a later version's episodes begin with the earlier version's (the store
    only appends shards), so the added episodes are exactly the tail."""
    old_ids = [s.id for s in old.manifest.shards]
    new_ids = [s.id for s in new.manifest.shards]
    prefix = old.name == new.name and new_ids[: len(old_ids)] == old_ids
    r_old, r_new = old.episode_returns, new.episode_returns
    added = r_new[len(r_old) :] if prefix else r_new
    steps_added = int(new.episode_lengths[len(old) :].sum()) if prefix else new.num_steps
    return VersionDiff(
        old=old.ref,
        new=new.ref,
        prefix=prefix,
        episodes_old=len(old),
        episodes_new=len(new),
        episodes_added=len(added) if prefix else len(new) - len(old),
        steps_added=steps_added if prefix else new.num_steps - old.num_steps,
        return_mean_old=_mean(r_old),
        return_mean_new=_mean(r_new),
        return_mean_added=_mean(added),
        added_returns=added,
    )


def diff_figure(old: Dataset, new: Dataset, bins: int = 30) -> Figure:
    """Return histograms of the old version and of what the new one added, on shared bins."""
    d = diff_versions(old, new)
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.subplots()
    r_old = old.episode_returns
    both = np.concatenate([r_old, d.added_returns])
    edges = np.histogram_bin_edges(both, bins=bins) if len(both) else bins
    ax.hist(r_old, bins=edges, alpha=0.6, label=f"{d.old} ({len(r_old)} ep.)")
    added_label = "added in " if d.prefix else ""
    ax.hist(
        d.added_returns,
        bins=edges,
        alpha=0.6,
        label=f"{added_label}{d.new} ({len(d.added_returns)} ep.)",
    )
    ax.set(
        title=f"{d.old} → {d.new}\n+{d.episodes_added} episodes, mean return {d.return_shift:+.3g}",
        xlabel="return (sum of rewards)",
        ylabel="episodes",
    )
    ax.legend()
    return fig
