"""How long `flexrl runs ls --json` takes over thousands of recorded runs.

    .venv/bin/python benchmarks/runs_ls_bench.py [--runs 5000] [--repeats 5]

Records one real run through the workspace API, copies it N times under fresh ids (recording
N real runs would spend minutes in `git` for provenance, which `ls` never reads), then times:
  - `flexrl --version` as a subprocess: the floor (interpreter and CLI start-up);
  - `flexrl runs ls --json` as a subprocess: what a user or a script waits for;
  - `Workspace.list_runs()` in process: the listing itself.
Prints a table and writes benchmarks/results/runs_ls_bench.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flexrl.workspace import Artifact, ArtifactKind, RunRecord, Workspace

RESULTS = Path(__file__).parent / "results"


def populate(root: Path, n: int) -> None:
    ws = Workspace(root)
    with ws.start_run("train", "template", seed=0) as run:
        run.add_input(
            Artifact(kind=ArtifactKind.DATASET, ref="walk@v1", digest="sha256:" + "a" * 64)
        )
        for step in range(100):
            run.log_metrics(step, {"loss": 1.0 / (step + 1), "episodic_return": float(step)})
        ckpt = run.artifacts_dir / "policy.pt"
        ckpt.write_bytes(b"0" * 1024)
        run.add_artifact(ckpt, ArtifactKind.CHECKPOINT, role="final")
    template = run.dir
    record = RunRecord.model_validate_json((template / "run.json").read_bytes())
    kinds = ["train", "collect", "finetune-dt", "eval"]
    for i in range(n - 1):
        run_id = f"20260101-{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-run{i}-{i:06x}"
        target = root / "runs" / run_id
        shutil.copytree(template, target)
        copy = record.model_copy(update={"id": run_id, "name": f"run{i}", "kind": kinds[i % 4]})
        (target / "run.json").write_text(copy.model_dump_json(indent=2))


def time_it(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        populate(root, args.runs)
        flexrl = [sys.executable, "-m", "flexrl"]

        def cli(*argv: str) -> str:
            return subprocess.run(
                [*flexrl, *argv], capture_output=True, text=True, check=True
            ).stdout

        listed = json.loads(cli("runs", "ls", "--json", "--workspace", str(root)))
        assert len(listed) == args.runs, len(listed)
        results = {
            "flexrl --version (start-up floor)": time_it(lambda: cli("--version"), args.repeats),
            f"flexrl runs ls --json ({args.runs} runs)": time_it(
                lambda: cli("runs", "ls", "--json", "--workspace", str(root)), args.repeats
            ),
            f"Workspace.list_runs() ({args.runs} runs)": time_it(
                lambda: Workspace(root).list_runs(), args.repeats
            ),
        }

    print(f"{'what':<42} {'median s':>9} {'min s':>7}")
    for what, times in results.items():
        print(f"{what:<42} {statistics.median(times):>9.3f} {min(times):>7.3f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "runs_ls_bench.json"
    out.write_text(
        json.dumps(
            {"runs": args.runs, "seconds": results, "python": sys.version.split()[0]}, indent=2
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
