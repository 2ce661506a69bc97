"""A long `humanoid_walk_forward` run: its learning curve, forward speed and fall rate.

    flexrl train --config recipes/humanoid_walk_forward.yaml --name walk-long \\
        --set ppo.total_steps=4000000 --workspace WS
    .venv/bin/python benchmarks/walk_forward_curve.py walk-long --workspace WS [--episodes 20]

Plots the training curve (episodic return, and episode length: episodes shorter than the
1000-step limit ended in a fall) into benchmarks/humanoid_walk_forward.png, evaluates the
final policy with `flexrl eval` (deterministic, --episodes episodes of walk_forward) and
writes both to benchmarks/results/walk_forward_curve.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from flexrl.analysis.curves import run_curve
from flexrl.workspace import Workspace

HERE = Path(__file__).parent
PLOT = HERE / "humanoid_walk_forward.png"
RESULTS = HERE / "results" / "walk_forward_curve.json"


def smooth(y: np.ndarray, window: int = 10) -> np.ndarray:
    """Trailing mean over `window` updates (the first ones over fewer)."""
    cumulative = np.cumsum(np.insert(y, 0, 0.0))
    counts = np.minimum(np.arange(1, len(y) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(len(y)) + 1 - counts]) / counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the walk_forward training run (id, prefix or name)")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()

    ws = Workspace(args.workspace)
    record = ws.resolve_run(args.run)
    ret = run_curve(record, "episodic_return", args.workspace)
    length = run_curve(record, "episodic_length", args.workspace)

    evaluation = subprocess.run(
        [sys.executable, "-m", "flexrl", "eval", record.id, "--episodes", str(args.episodes),
         "--task", "walk_forward", "--json", "--workspace", str(args.workspace)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    report = json.loads(evaluation)["tasks"]["walk_forward"]

    fig = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, curve, label in ((left, ret, "episodic return"), (right, length, "episode length")):
        ax.plot(curve.x / 1e6, curve.y, color="C0", alpha=0.25, lw=0.8, label="per update")
        ax.plot(curve.x / 1e6, smooth(curve.y), color="C0", label="mean of 10 updates")
        ax.set(xlabel="environment steps (millions)", ylabel=label)
        ax.grid(alpha=0.3)
    right.axhline(1000, color="grey", ls="--", lw=0.8, label="time limit (no fall)")
    left.legend(fontsize="small")
    right.legend(fontsize="small")
    fig.suptitle(
        f"PPO on humanoid_walk_forward (target 1.0 m/s), run {record.name}: final policy "
        f"{report['forward_speed']:.2f} m/s forward, falls in {report['fall_rate']:.0%} of "
        f"{report['episodes']} episodes"
    )
    fig.savefig(PLOT, dpi=110)

    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "run": record.id,
                "steps": float(ret.x[-1]),
                "train_return_last_20_updates": float(np.mean(ret.y[-20:])),
                "train_length_last_20_updates": float(np.mean(length.y[-20:])),
                "eval": report,
            },
            indent=2,
        )
    )
    print(json.dumps(report, indent=2))
    print(f"plot: {PLOT}\nresults: {RESULTS}")


if __name__ == "__main__":
    main()
