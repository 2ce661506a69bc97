"""Offline learning on walking data: BC, top-10% BC and the DT against the shipped experts.

    .venv/bin/python benchmarks/offline_bench.py --workspace WS [--replay NAME@vN --replay-task T]
        [--datasets walk_forward,turn_left,turn_right,goal,commands] [--jobs 2]

Datasets, all made by flexrl (`flexrl collect`, each unless it exists in WS):
- one expert dataset per shipped skill: `collect --policy zoo:SKILL --task SKILL --noise 0.05`;
- `commands`: the command-following policy (zoo:goal) held at each command of a grid
  (`collect --command`), with noise: its learners are evaluated at commands between the
  grid's, inside the data's range but not in it (interpolation);
  it is relabelled with hindsight instructions (`flexrl data relabel`: each episode's command
  said exactly), so BC and the DT are also trained told in words (`data.condition:
  instruction`) and judged at the held-out commands said the same way;
- `replay` (with --replay): the rollouts of a PPO training run (`flexrl train --record-to`),
  from its first falls to the end of training.

On each, `flexrl finetune bc`, `bc` on the best 10% of episodes by return, and `dt` are trained
with the repository's recipes (steps set here), then evaluated with `flexrl eval`
(deterministic, --eval-episodes episodes of up to 1000 steps) on the dataset's task, or for
`commands` at each held-out command. The expert is evaluated alike (the zoo policy, no noise).
Every step is a real CLI call recorded as a run in WS (`flexrl runs lineage` follows each
number). The DT is conditioned on the best return in its training data (its recipe's default),
and sees the command in its observations, as BC does.

Results go to benchmarks/results/offline_bench.json as they come (a rerun skips finished
cells), and Markdown tables are printed.
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

from flexrl.language.grammar import command_phrase

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
METHODS = {  # name -> (finetune kind, recipe overrides)
    "BC": ("bc", []),
    "top-10% BC": ("bc", ["data.top_percent=10"]),
    "DT": ("dt", []),
}
# On `commands` only (its copy with hindsight instructions): the same recipes told in words.
LANGUAGE_METHODS = {
    "language BC": ("bc", ["data.condition=instruction"]),
    "language DT": ("dt", ["data.condition=instruction"]),
}
SKILLS = ("walk_forward", "turn_left", "turn_right", "goal")
# The command grid of the `commands` dataset, and the held-out commands between its points.
GRID = [(vx, 0.0, yaw) for vx in (0.0, 0.5, 1.0) for yaw in (-0.4, 0.0, 0.4)]
HELD_OUT = [(0.25, 0.0, 0.0), (0.75, 0.0, 0.0), (0.5, 0.0, 0.2), (0.75, 0.0, -0.2)]
METRICS = ("forward_speed", "fall_rate", "lin_vel_error", "yaw_rate_error", "return_mean")
SUCCESS = "instruction_success"  # `commands` only: tracked within the skill bars, no fall


def flexrl(*args: str, workspace: Path) -> str:
    """Run the real CLI; its stdout, or the error with the command that failed."""
    cmd = [sys.executable, "-m", "flexrl", *args, "--workspace", str(workspace)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def command_arg(command: tuple[float, float, float]) -> str:
    return ",".join(f"{v:g}" for v in command)


def ensure_dataset(label: str, args: argparse.Namespace) -> str:
    """The dataset of `label`, collected unless WS has it; its pinned reference."""
    ws = args.workspace
    name = f"{label}-expert"
    existing = json.loads(flexrl("data", "ls", "--json", workspace=ws))
    if not any(d["name"] == name for d in existing):
        common = ["--dataset", name, "--noise", str(args.noise), "--workers", str(args.jobs)]
        if label == "commands":  # one collection per grid command, each a new version
            per_command = max(1, args.episodes // len(GRID))
            for i, command in enumerate(GRID):
                flexrl("collect", "--policy", "zoo:goal", "--command", command_arg(command),
                       "--episodes", str(per_command), "--seed", str(100_000 + 1000 * i),
                       *common, workspace=ws)  # fmt: skip
        else:
            flexrl("collect", "--policy", f"zoo:{label}", "--task", label,
                   "--episodes", str(args.episodes), "--seed", "100", *common,
                   workspace=ws)  # fmt: skip
    ref = json.loads(flexrl("data", "info", name, "--json", workspace=ws))["ref"]
    if label == "commands":  # hindsight instructions, for the language-conditioned methods
        told = f"{ref.replace('@', '-')}-told"
        if not any(d["name"] == told for d in existing):
            flexrl("data", "relabel", ref, "--name", told, workspace=ws)
        ref = json.loads(flexrl("data", "info", told, "--json", workspace=ws))["ref"]
    return ref


def evaluate(source: str, task: str, args: argparse.Namespace) -> dict[str, Any]:
    """`flexrl eval` of SOURCE on `task`, or ("commands") averaged over the held-out commands,
    each given as the command said exactly (a language-conditioned model hears those words,
    which its data never held; the others get the command they mean)."""
    targets = [["--task", task]] if task != "commands" else [
        ["--instruction", command_phrase(c)] for c in HELD_OUT
    ]  # fmt: skip
    rows = []
    for target in targets:
        episodes = str(args.eval_episodes)
        cli_args = ["eval", source, "--episodes", episodes, *target, "--json", "--seed", "1"]
        report = json.loads(flexrl(*cli_args, workspace=args.workspace))
        row = next(iter(report["tasks"].values()))
        rows.append({**row, SUCCESS: report["summary"].get(SUCCESS)})
    keys = (*METRICS, SUCCESS) if task == "commands" else METRICS
    return {
        key: sum(r[key] for r in rows) / len(rows) if all(r[key] is not None for r in rows)
        else None
        for key in keys
    }  # fmt: skip


def train_and_eval(args: argparse.Namespace, ref: str, task: str, method: str) -> dict[str, Any]:
    kind, overrides = {**METHODS, **LANGUAGE_METHODS}[method]
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
    return {"run": name, "steps": steps, "train_seconds": round(trained, 1),
            **evaluate(name, task, args)}  # fmt: skip


def fmt(row: dict[str, Any]) -> str:
    speed = "-" if row["forward_speed"] is None else f"{row['forward_speed']:.2f} m/s"
    return (f"{speed}, falls {row['fall_rate']:.0%}, err {row['lin_vel_error']:.2f} m/s "
            f"/ {row['yaw_rate_error']:.2f} rad/s")  # fmt: skip


def tables(results: dict[str, Any]) -> str:
    lines = [
        "| data (episodes, steps) | expert | " + " | ".join(METHODS) + " |",
        "|---|" + "---|" * (len(METHODS) + 1),
    ]
    ratios = [
        "| data | " + " | ".join(f"{m}: speed, falls" for m in METHODS) + " |",
        "|---|" + "---:|" * len(METHODS),
    ]
    for label, entry in results["datasets"].items():
        expert, methods = entry.get("expert"), entry["methods"]
        if expert is None:
            continue
        data = entry["data"]
        cells = [fmt(methods[m]) if m in methods else "-" for m in METHODS]
        lines.append(f"| {label} (`{entry['ref']}`: {data['episodes']}, {data['steps']:,}) | "
                     f"{fmt(expert)} | " + " | ".join(cells) + " |")  # fmt: skip
        cells = []
        for method in METHODS:
            row = methods.get(method)
            if row is None or not expert["forward_speed"]:
                cells.append("-")
                continue
            falls = (f"{row['fall_rate'] / expert['fall_rate']:.1f}x" if expert["fall_rate"]
                     else f"{row['fall_rate']:.0%} (expert 0%)")  # fmt: skip
            cells.append(f"{row['forward_speed'] / expert['forward_speed']:.2f}x, {falls}")
        ratios.append(f"| {label} | " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n\nAgainst the expert:\n\n" + "\n".join(ratios)
    entry = results["datasets"].get("commands")
    if entry and entry.get("expert"):  # interpolation: told by command against told in words
        rows = [("expert (zoo:goal)", entry["expert"]), *entry["methods"].items()]
        out += (
            "\n\nAt held-out commands (`commands`), success = tracked within the skill bars "
            "without falling:\n\n| model | success | speed, falls, errors |\n|---|---:|---|\n"
        )
        out += "\n".join(
            f"| {name} | {row.get(SUCCESS) or 0:.0%} | {fmt(row)} |" for name, row in rows
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--datasets", default=",".join([*SKILLS, "commands"]),
                        help="comma-separated: skills of the zoo, and/or 'commands'")  # fmt: skip
    parser.add_argument("--replay", help="a replay dataset ref (NAME@vN) from --record-to")
    parser.add_argument("--replay-task", default="goal", help="the task the replay is judged on")
    parser.add_argument("--episodes", type=int, default=100, help="per expert dataset")
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--bc-steps", type=int, default=5000)
    parser.add_argument("--dt-steps", type=int, default=6000)
    parser.add_argument("--jobs", type=int, default=2, help="trainings run at once")
    args = parser.parse_args()
    labels = [d for d in args.datasets.split(",") if d]
    unknown = set(labels) - {*SKILLS, "commands"}
    if unknown:
        parser.error(f"--datasets: unknown {sorted(unknown)}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "offline_bench.json"
    results: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    results.setdefault("datasets", {})
    results["settings"] = {k: str(v) for k, v in vars(args).items()}
    results["held_out_commands"] = HELD_OUT
    results["grid_commands"] = GRID

    datasets = {label: (ensure_dataset(label, args), label) for label in labels}
    if args.replay:
        info = json.loads(flexrl("data", "info", args.replay, "--json", workspace=args.workspace))
        datasets["replay"] = (info["ref"], args.replay_task)
    todo = []
    for label, (ref, task) in datasets.items():
        entry = results["datasets"].setdefault(label, {"methods": {}})
        if entry.get("ref") != ref:  # another dataset version: its old cells do not apply
            entry.update(ref=ref, methods={}, expert=None)
        stats = json.loads(flexrl("data", "info", ref, "--json", workspace=args.workspace))
        entry["data"] = {"episodes": stats["stats"]["episodes"], "steps": stats["stats"]["steps"]}
        entry["task"] = task
        if entry.get("expert") is None:
            expert = "zoo:goal" if task in ("commands", "goal") else f"zoo:{task}"
            entry["expert"] = {"policy": expert, **evaluate(expert, task, args)}
        methods = [*METHODS, *(LANGUAGE_METHODS if label == "commands" else ())]
        todo += [(label, ref, task, m) for m in methods if m not in entry["methods"]]
    out.write_text(json.dumps(results, indent=2))

    def cell(job: tuple[str, str, str, str]) -> None:
        label, ref, task, method = job
        result = train_and_eval(args, ref, task, method)
        results["datasets"][label]["methods"][method] = result
        out.write_text(json.dumps(results, indent=2))  # threads: the GIL orders the writes
        print(f"{label:>12} {method:>11}: {fmt(result)}", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(cell, todo))
    print(tables(results))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
