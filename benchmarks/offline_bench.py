"""Offline results on flexrl-collected Humanoid data: behaviour policy vs BC vs top-10% BC vs DT.

    .venv/bin/python benchmarks/offline_bench.py --expert RUN --replay NAME@vN \\
        --workspace WS [--expert-episodes 100] [--noise 0.05] [--jobs 2]
    (--expert and --replay can also run one at a time: the results file keeps both)

Two datasets of one skill, as D4RL's expert and medium-replay:
- expert: `flexrl collect` of the trained PPO run RUN (its mean action plus Gaussian noise
  `--noise`, in action units), made here unless it exists;
- replay: the training rollouts of a PPO run (`flexrl train --record-to`), given as a ref.

On each, `flexrl finetune bc`, `bc` on the best 10% of episodes by return, and `dt` are trained
with the repository's recipes (steps set here), then each policy is evaluated with
`flexrl eval` (deterministic, --eval-episodes episodes). Every step is a real CLI call recorded
as a run in WS, so the lineage of each number can be followed with `flexrl runs lineage`.
Scores are normalised to the behaviour policy's return: the mean return of the dataset's
episodes (for the expert data, the noisy expert that collected it). The DT is conditioned on
the best return in its training data (its recipe's default).

Results go to benchmarks/results/offline_bench.json as they come (a rerun skips finished
cells), and a Markdown table is printed. D4RL's published shape to compare with: on
single-policy data DT ~ BC; on mixed data DT and top-10% BC >> BC.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
METHODS = {  # name -> (finetune kind, recipe overrides)
    "BC": ("bc", []),
    "top-10% BC": ("bc", ["data.top_percent=10"]),
    "DT": ("dt", []),
}


def flexrl(*args: str, workspace: Path) -> str:
    """Run the real CLI; its stdout, or the error with the command that failed."""
    cmd = [sys.executable, "-m", "flexrl", *args, "--workspace", str(workspace)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def dataset_returns(ref: str, workspace: Path) -> dict[str, Any]:
    info = json.loads(flexrl("data", "info", ref, "--json", workspace=workspace))
    returns = info["stats"]["returns"]
    return {"ref": info["ref"], "episodes": info["stats"]["episodes"], "return": returns}


def ensure_expert(args: argparse.Namespace) -> str:
    name = f"{args.expert}-expert"
    existing = json.loads(flexrl("data", "ls", "--json", workspace=args.workspace))
    if not any(d["name"] == name for d in existing):
        flexrl(
            "collect", "--policy", args.expert, "--dataset", name,
            "--episodes", str(args.expert_episodes), "--noise", str(args.noise),
            "--task", args.task, "--seed", "100", "--workers", str(args.jobs),
            workspace=args.workspace,
        )  # fmt: skip
    return name


def train_and_eval(args: argparse.Namespace, ref: str, method: str) -> dict[str, Any]:
    kind, overrides = METHODS[method]
    steps = args.dt_steps if kind == "dt" else args.bc_steps
    name = f"{ref.replace('@', '-')}-{method.replace('%', '').replace(' ', '-').lower()}"
    sets = [*overrides, f"train.max_steps={steps}", f"train.steps_per_epoch={steps // 4}"]
    if kind == "dt":
        sets.append(f"train.warmup_steps={steps // 10}")
    start = time.monotonic()
    flexrl(
        "finetune", kind, "--dataset", ref, "--config", f"recipes/finetune_{kind}.yaml",
        "--name", name, *(a for s in sets for a in ("--set", s)),
        workspace=args.workspace,
    )  # fmt: skip
    trained = time.monotonic() - start
    evaluation = flexrl(
        "eval", name, "--episodes", str(args.eval_episodes), "--task", args.task, "--json",
        workspace=args.workspace,
    )  # fmt: skip
    report = json.loads(evaluation)
    summary = report["summary"]
    return {
        "run": report["source"]["run"],
        "return": summary["eval_return"],
        "return_std": summary["eval_return_std"],
        "length": summary["eval_length"],
        "fall_rate": summary["eval_fall_rate"],
        "forward_speed": summary.get("eval_forward_speed"),
        "train_seconds": round(trained, 1),
        "steps": steps,
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "| dataset | episodes | behaviour return | BC | top-10% BC | DT |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, entry in results["datasets"].items():
        behaviour = entry["behaviour"]["return"]["mean"]
        cells = []
        for method in METHODS:
            cell = entry["methods"].get(method)
            cells.append(
                "-"
                if cell is None
                else f"{cell['return'] / behaviour:.2f} ({cell['return']:.0f} ± "
                f"{cell['return_std']:.0f})"
            )
        lines.append(
            f"| {label} (`{entry['behaviour']['ref']}`) | {entry['behaviour']['episodes']} | "
            f"1.00 ({behaviour:.0f}) | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expert", help="the trained PPO run (expert policy)")
    parser.add_argument("--replay", help="the replay dataset ref (NAME@vN)")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--task", default="walk_forward")
    parser.add_argument("--expert-episodes", type=int, default=100)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--bc-steps", type=int, default=5000)
    parser.add_argument("--dt-steps", type=int, default=4000)
    parser.add_argument("--jobs", type=int, default=2, help="trainings run at once")
    args = parser.parse_args()

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "offline_bench.json"
    results: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    results.setdefault("datasets", {})
    results["settings"] = {k: str(v) for k, v in vars(args).items()}

    datasets = {}  # either may be given alone; results of earlier runs are kept
    if args.expert:
        datasets["expert"] = dataset_returns(ensure_expert(args), args.workspace)["ref"]
    if args.replay:
        datasets["replay"] = args.replay
    todo = []
    for label, ref in datasets.items():
        entry = results["datasets"].setdefault(label, {"methods": {}})
        entry["behaviour"] = dataset_returns(ref, args.workspace)
        ref = entry["behaviour"]["ref"]  # pinned to a version
        if entry.get("ref") != ref:  # another dataset: its old cells do not apply
            entry["ref"], entry["methods"] = ref, {}
        todo += [(label, ref, m) for m in METHODS if m not in entry["methods"]]
    out.write_text(json.dumps(results, indent=2))

    def cell(job: tuple[str, str, str]) -> None:
        label, ref, method = job
        result = train_and_eval(args, ref, method)
        results["datasets"][label]["methods"][method] = result
        out.write_text(json.dumps(results, indent=2))  # threads: the GIL orders the writes
        print(f"{label:>7} {method:>11}: return {result['return']:.1f}", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(cell, todo))
    print(table(results))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
