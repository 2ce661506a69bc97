"""`flexrl eval` and `flexrl collect` before and after the rollout package, side by side.

    .venv/bin/python benchmarks/rollout_bench.py [--repeats 3] [--before REV]
    .venv/bin/python benchmarks/rollout_bench.py --quick      # 2 eval / 4 collect episodes

Before: the code at REV (default: the commit before `flexrl/rollout/` existed), checked out
into a temporary git worktree and run with this checkout's virtual environment; after: this
checkout. Both run the real CLI in a subprocess, timed end to end (start-up included, as a user
waits for it), with their defaults: `flexrl eval zoo:walk_forward --episodes 20` (20 Humanoid
episodes of 1000 steps) and `flexrl collect --policy zoo:walk_forward --episodes 100 --seed 0`
into a fresh workspace. Repetitions interleave before and after so other load slows both alike;
the table shows medians and the ratio before/after. The eval metrics of both are printed too:
batching changes the policy's float32 arithmetic in the last bits, so the episodes differ but
must tell the same story. Writes benchmarks/results/rollout_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
POLICY = "zoo:walk_forward"


def before_rollout_package() -> str:
    """The parent of the commit that added flexrl/rollout/loop.py."""
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "flexrl/rollout/loop.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if not added:
        sys.exit("rollout_bench: no commit adds flexrl/rollout/loop.py; give --before REV")
    return f"{added[-1]}^"


def timed(code: Path, args: list[str], workspace: Path) -> tuple[float, str]:
    """Seconds for `python -m flexrl ARGS` running `code` (a checkout), and its stdout."""
    env = {**os.environ, "PYTHONPATH": str(code), "FLEXRL_DEBUG": ""}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "flexrl", *args, "--workspace", str(workspace)],
        cwd=code, env=env, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"rollout_bench: {' '.join(args)} failed in {code}:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", help="git revision of the 'before' code")
    parser.add_argument("--quick", action="store_true", help="a few episodes: a sanity run")
    args = parser.parse_args()
    eval_episodes, collect_episodes = (2, 4) if args.quick else (20, 100)
    rev = args.before or before_rollout_package()
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before), rev],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=before, capture_output=True,
                text=True, check=True,
            ).stdout.strip()  # fmt: skip
            codes = {"before": before, "after": ROOT}
            collect_args = ["collect", "--policy", POLICY, "--episodes", str(collect_episodes)]
            jobs = {
                "eval": ["eval", POLICY, "--episodes", str(eval_episodes), "--json"],
                "collect": [*collect_args, "--seed", "0", "--json"],
            }
            seconds: dict[str, dict[str, list[float]]] = {j: {c: [] for c in codes} for j in jobs}
            reports: dict[str, dict] = {}
            for r in range(args.repeats):
                for job, cli_args in jobs.items():
                    for side, code in codes.items():
                        ws = Path(tmp) / f"ws-{side}-{job}-{r}"
                        extra = ["--dataset", "bench"] if job == "collect" else []
                        s, out = timed(code, [*cli_args, *extra], ws)
                        seconds[job][side].append(s)
                        if job == "eval":
                            reports[side] = json.loads(out)["tasks"]
                        print(f"{job:8s} {side:6s} repeat {r}: {s:6.1f} s", flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False
            )
    table = {
        job: {
            "before_s": statistics.median(by_side["before"]),
            "after_s": statistics.median(by_side["after"]),
            "speedup": statistics.median(by_side["before"]) / statistics.median(by_side["after"]),
            "runs": by_side,
        }
        for job, by_side in seconds.items()
    }
    print(f"\nbefore = {rev} ({commit}); medians of {args.repeats}")
    print("| command | before s | after s | before / after |\n|---|---:|---:|---:|")
    labels = {
        "eval": f"`flexrl eval {POLICY} --episodes {eval_episodes}`",
        "collect": f"`flexrl collect --policy {POLICY} --episodes {collect_episodes}`",
    }
    for job, row in table.items():
        print(f"| {labels[job]} | {row['before_s']:.1f} | {row['after_s']:.1f} "
              f"| {row['speedup']:.2f}x |")  # fmt: skip
    for side, tasks in reports.items():
        for task, m in tasks.items():
            print(f"eval {side}: {task} speed {m['forward_speed']:.3f} m/s, falls "
                  f"{m['fall_rate']:.0%}, vel. error {m['lin_vel_error']:.3f}")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"before": rev, "before_commit": commit, "table": table, "eval": reports}
    (RESULTS / "rollout_bench.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
