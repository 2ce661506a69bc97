"""A skill's learning curve: speed, fall rate and tracking errors against env steps and wall time.

    flexrl train --config recipes/humanoid_walk_forward.yaml --name walk --workspace WS
    .venv/bin/python benchmarks/skill_curves.py walk_forward walk --workspace WS [--episodes 20]
    .venv/bin/python benchmarks/skill_curves.py multitask multiW multiW2 mirC mirD --workspace WS

Reads the training metrics of RUN (a resumed run holds its whole history; several runs are a
chain, each started from the one before with `ppo.init_from`, drawn end to end), plots the training
episodes' forward speed, fall rate, velocity error and yaw-rate error (means over the episodes
that ended in each update, stochastic policy, smoothed over 10 updates; a multitask run's per
task) against env steps, with wall time on the top axis, into benchmarks/curves/SKILL.png.
Then evaluates the final policy as
the issue's criteria do (`flexrl eval`, deterministic, --episodes episodes of 1000 steps with
eval seeds, which training never uses) on each task the skill is judged on, draws those figures
as dots at the end of the curves, and writes benchmarks/results/curves/SKILL.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from flexrl.analysis.curves import read_metrics, run_curve
from flexrl.workspace import Workspace

HERE = Path(__file__).parent
# Which tasks each skill is judged on (the multitask policy on all of them; `turn` a policy
# trained on both directions, as turnM: the turn recipe itself trains turn_left).
JUDGED = {
    "walk_forward": ["walk_forward"],
    "turn": ["turn_left", "turn_right"],
    "turn_left": ["turn_left"],
    "turn_right": ["turn_right"],
    "goal": ["goal"],
    "multitask": ["walk_forward", "turn_left", "turn_right", "goal"],
}
PANELS = (
    ("episodic_forward_speed", "forward_speed", "forward speed (m/s)"),
    ("episodic_fall_rate", "fall_rate", "fall rate"),
    ("episodic_lin_vel_error", "lin_vel_error", "velocity error (m/s)"),
    ("episodic_yaw_rate_error", "yaw_rate_error", "yaw-rate error (rad/s)"),
)


def smooth(y: np.ndarray, window: int = 10) -> np.ndarray:
    """Trailing mean over `window` updates (the first ones over fewer)."""
    cumulative = np.cumsum(np.insert(y, 0, 0.0))
    counts = np.minimum(np.arange(1, len(y) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(len(y)) + 1 - counts]) / counts


def evaluate(run: str, task: str, episodes: int, seed: int, workspace: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "flexrl", "eval", run, "--episodes", str(episodes),
         "--task", task, "--seed", str(seed), "--json", "--workspace", str(workspace)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out)["tasks"][task]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("skill", choices=sorted(JUDGED))
    parser.add_argument(
        "runs", nargs="+", metavar="run",
        help="the training run (id, prefix or name); several: a chain, each from the one before",
    )  # fmt: skip
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="flexrl eval's --seed")
    args = parser.parse_args()

    records = [Workspace(args.workspace).resolve_run(run) for run in args.runs]
    record = records[-1]  # the policy the chain ends with
    # Each stage's steps and minutes continue where the stage before it ended.
    step_offsets, minute_offsets, steps, minutes = [0.0], [0.0], [], []
    for stage in records:
        columns = read_metrics(stage.id, args.workspace)
        steps.append(columns["step"].astype(float) + step_offsets[-1])
        minutes.append(columns["time_s"] / 60.0 + minute_offsets[-1])
        step_offsets.append(float(steps[-1][-1]))
        minute_offsets.append(float(minutes[-1][-1]))
    steps, minutes = np.concatenate(steps), np.concatenate(minutes)
    judged = JUDGED[args.skill]
    # A multitask run logs each task's episodes apart too (`episodic_fall_rate/turn_left`);
    # a chain with an older stage that did not is drawn pooled.
    logged = [set(read_metrics(stage.id, args.workspace)) for stage in records]
    per_task = len(judged) > 1 and all(f"{PANELS[0][0]}/{t}" in c for c in logged for t in judged)
    lines = {t: f"/{t}" for t in judged} if per_task else {"training episodes": ""}

    def chained(metric: str) -> tuple[np.ndarray, np.ndarray]:
        stages = [run_curve(stage, metric, args.workspace) for stage in records]
        x = [c.x + offset for c, offset in zip(stages, step_offsets[:-1], strict=True)]
        return np.concatenate(x), np.concatenate([c.y for c in stages])

    curves = {
        metric: {line: chained(metric + suffix) for line, suffix in lines.items()}
        for metric, _, _ in PANELS
    }
    evals = {t: evaluate(record.id, t, args.episodes, args.seed, args.workspace) for t in judged}

    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, (metric, key, label) in zip(axes, PANELS, strict=True):
        for line, (x, y) in curves[metric].items():
            # per task, the colour of that task's eval dot
            color = f"C{judged.index(line) + 1}" if per_task else "C0"
            ax.plot(x / 1e6, y, color=color, alpha=0.2, lw=0.8)
            ax.plot(x / 1e6, smooth(y), color=color, label=f"training: {line}")
        for start in step_offsets[1:-1]:  # where each continuation of a chain began
            ax.axvline(start / 1e6, color="grey", ls=":", lw=0.8)
        for i, (task, row) in enumerate(evals.items()):
            if row.get(key) is not None:
                ax.plot(
                    steps[-1] / 1e6, row[key], "o", color=f"C{i + 1}",
                    label=f"final eval: {task}",
                )  # fmt: skip
        ax.set(xlabel="environment steps (millions)", ylabel=label)
        ax.grid(alpha=0.3)
        if len(steps) > 1:
            top = ax.secondary_xaxis(
                "top",
                functions=(
                    lambda m: np.interp(m, steps / 1e6, minutes),
                    lambda t: np.interp(t, minutes, steps / 1e6),
                ),
            )
            top.set_xlabel("wall time (minutes)")
    axes[1].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize="small")
    summary = "\n".join(
        f"{task}: {row['forward_speed']:.2f} m/s, vel err {row['lin_vel_error']:.2f}, "
        f"yaw err {row['yaw_rate_error']:.2f}, falls {row['fall_rate']:.0%}"
        for task, row in evals.items()
    )
    names = " > ".join(stage.name for stage in records)
    fig.suptitle(f"{args.skill} ({names}), final policy over {args.episodes} eval episodes:\n"
                 f"{summary}", fontsize="medium")  # fmt: skip
    plot = HERE / "curves" / f"{args.skill}.png"
    plot.parent.mkdir(exist_ok=True)
    fig.savefig(plot, dpi=100)

    out = HERE / "results" / "curves" / f"{args.skill}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "run": record.id,
                "chain": [stage.id for stage in records],
                "steps": float(steps[-1]),
                "wall_minutes": float(minutes[-1]),
                "eval": evals,
            },
            indent=2,
        )
    )
    print(json.dumps(evals, indent=2))
    print(f"plot: {plot}\nresults: {out}")


if __name__ == "__main__":
    main()
