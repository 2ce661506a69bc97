"""Runs recorded under workspace/runs/: contents, statuses from real processes, concurrency."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flexrl.config import TrainRecipe
from flexrl.errors import FlexrlError
from flexrl.fileio import sha256_file
from flexrl.workspace import Artifact, ArtifactKind, RunRecord, RunStatus, Workspace
from flexrl.workspace.provenance import code_version

# A script that records one run into the workspace given as argv[1], then does argv[2].
RECORDER = textwrap.dedent(
    """
    import sys, time
    from flexrl.workspace import Workspace
    ws, action = sys.argv[1], sys.argv[2]
    with Workspace(ws).start_run("job", sys.argv[3] if len(sys.argv) > 3 else "job", seed=7) as run:
        run.log_metrics(0, {"loss": 1.0})
        print(run.id, flush=True)
        if action == "sleep":
            time.sleep(60)
        elif action == "raise":
            raise RuntimeError("boom in user code")
        elif action == "start-at":  # start all writers at the same moment
            while time.time() < float(sys.argv[4]):
                time.sleep(0.001)
    """
)


def start_recorder(workspace: Path, action: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(workspace), action, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_run_records_everything(workspace, tmp_path):
    recipe = TrainRecipe(name="walk", seed=3)
    checkpoint = tmp_path / "outside.pt"
    ws = Workspace(workspace)
    with ws.start_run("train", "walk", recipe=recipe, seed=3, argv=["flexrl", "train"]) as run:
        run.add_input(Artifact(kind=ArtifactKind.DATASET, ref="walk@v2", digest="sha256:ab"))
        for step in range(3):
            run.log_metrics(step, {"loss": 1.0 / (step + 1)})
        run.log_metrics(3, {"loss": 0.2, "return": 10.0})  # a new column mid-run
        ckpt = run.artifacts_dir / "policy.pt"
        ckpt.write_bytes(b"weights")
        checkpoint.write_bytes(b"elsewhere")
        art = run.add_artifact(ckpt, ArtifactKind.CHECKPOINT, role="final")
        outside = run.add_artifact(checkpoint)

    record = ws.load_run(run.id)
    assert record.status == RunStatus.COMPLETED
    assert record.seed == 3 and record.kind == "train" and record.name == "walk"
    assert record.ended_at and record.duration_s is not None
    assert record.inputs[0].ref == "walk@v2"
    assert art.ref == f"runs/{run.id}/artifacts/policy.pt"
    assert art.digest == sha256_file(ckpt) and art.size == 7
    assert outside.ref == str(checkpoint.resolve())
    assert record.metrics_rows == 4 and record.metrics_last == {"loss": 0.2, "return": 10.0}

    run_dir = workspace / "runs" / run.id
    rows = list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[0]["return"] == "" and rows[3]["return"] == "10.0"
    assert float(rows[1]["loss"]) == 0.5

    assert (
        TrainRecipe.model_validate(
            __import__("yaml").safe_load((run_dir / "recipe.yaml").read_text())
        )
        == recipe
    )
    provenance = ws.load_provenance(run.id)
    assert provenance.argv == ["flexrl", "train"]
    assert provenance.packages["numpy"] and provenance.python.startswith("3.")
    assert provenance.code.flexrl_version


def test_code_version_records_commit_dirty_flag_and_diff(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()

    clean, diff = code_version(repo)
    assert clean.git_commit == head and clean.git_dirty is False and diff == ""

    (repo / "a.py").write_text("x = 2\n")
    (repo / "new.py").write_text("")
    dirty, diff = code_version(repo)
    assert dirty.git_dirty is True and "+x = 2" in diff and dirty.untracked == ["new.py"]

    not_git, diff = code_version(tmp_path / "nowhere")
    assert not_git.git_commit is None and diff == ""


def test_a_dirty_tree_saves_its_diff_beside_the_run(workspace, monkeypatch):
    from flexrl.workspace import provenance

    monkeypatch.setattr(
        provenance,
        "code_version",
        lambda: (provenance.CodeVersion(flexrl_version="t"), "+change\n"),
    )
    with Workspace(workspace).start_run("job", "dirty") as run:
        pass
    assert (run.dir / "code.diff").read_text() == "+change\n"
    assert Workspace(workspace).load_provenance(run.id).code.diff_file == "code.diff"


def test_exception_in_run_code_records_failed(workspace):
    proc = start_recorder(workspace, "raise")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "boom in user code" in err
    record = Workspace(workspace).load_run(out.strip())
    assert record.status == RunStatus.FAILED
    assert record.error == "RuntimeError: boom in user code"
    assert "boom in user code" in (workspace / "runs" / record.id / "traceback.txt").read_text()


def test_flexrl_error_records_failed_without_traceback_file(workspace):
    ws = Workspace(workspace)
    with pytest.raises(FlexrlError), ws.start_run("job", "bad") as run:
        raise FlexrlError("unknown dataset: nope")
    record = ws.load_run(run.id)
    assert record.status == RunStatus.FAILED and record.error == "unknown dataset: nope"
    assert not (run.dir / "traceback.txt").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_records_interrupted(workspace, sig):
    proc = start_recorder(workspace, "sleep")
    run_id = proc.stdout.readline().strip()  # the run exists and is inside its sleep
    assert Workspace(workspace).load_run(run_id).status == RunStatus.RUNNING
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    record = Workspace(workspace).load_run(run_id)
    assert record.status == RunStatus.INTERRUPTED
    assert record.error == f"interrupted by {sig.name}" or (sig == signal.SIGINT and record.error)
    assert record.metrics_rows == 1


def test_kill_9_shows_lost_and_leaves_valid_files(workspace):
    proc = start_recorder(workspace, "sleep")
    run_id = proc.stdout.readline().strip()
    proc.kill()
    proc.wait(timeout=60)
    ws = Workspace(workspace)
    record = ws.load_run(run_id)
    assert record.status == RunStatus.LOST  # the file still says running; the process is gone
    on_disk = json.loads((workspace / "runs" / run_id / "run.json").read_text())
    assert on_disk["status"] == "running"
    assert [r.status for r in ws.list_runs()] == [RunStatus.LOST]


def test_eight_processes_record_at_the_same_moment(workspace):
    workspace.mkdir(parents=True)
    start_at = str(time.time() + 3.0)  # after every interpreter has started
    procs = [start_recorder(workspace, "start-at", f"w{i}", start_at) for i in range(8)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    runs = Workspace(workspace).list_runs()
    assert sorted(r.name for r in runs) == [f"w{i}" for i in range(8)]
    assert {r.status for r in runs} == {RunStatus.COMPLETED}
    for run_dir in (workspace / "runs").iterdir():
        RunRecord.model_validate_json((run_dir / "run.json").read_bytes())
        json.loads((run_dir / "provenance.json").read_text())
        assert (run_dir / "metrics.csv").read_text().startswith("step,time_s,loss\n")
    assert not [p for p in (workspace / "runs").rglob(".tmp-*")]


def test_resolve_by_id_prefix_and_name(workspace):
    ws = Workspace(workspace)
    with ws.start_run("job", "alpha") as first:
        pass
    with ws.start_run("job", "alpha") as second:
        pass
    with ws.start_run("job", "beta") as third:
        pass
    assert ws.resolve_run(first.id).id == first.id
    assert ws.resolve_run(third.id[:-2]).id == third.id
    assert ws.resolve_run("alpha").id == second.id  # a name means its latest run
    with pytest.raises(FlexrlError, match="ambiguous"):
        ws.resolve_run(first.id[:8])
    with pytest.raises(FlexrlError, match="unknown run: 'gamma'"):
        ws.resolve_run("gamma")
    with pytest.raises(FlexrlError, match="unknown run"):
        ws.load_run("../../etc")


@pytest.mark.parametrize("name", ["", "../x", "a b", "-x", "x" * 65, "x\n", "x\r\n"])
def test_bad_run_names_are_refused_before_anything_is_written(workspace, name):
    with pytest.raises(FlexrlError, match="invalid run name"):
        Workspace(workspace).start_run("job", name)
    assert not workspace.exists()


def test_half_born_run_directories_are_skipped(workspace):
    ws = Workspace(workspace)
    with ws.start_run("job", "real"):
        pass
    (
        workspace / "runs" / "20260101-000000-born-abcdef"
    ).mkdir()  # claimed, run.json not yet written
    assert [r.name for r in ws.list_runs()] == ["real"]


def test_nested_signal_handler_is_restored(workspace):
    before = signal.getsignal(signal.SIGTERM)
    with Workspace(workspace).start_run("job", "x"):
        assert signal.getsignal(signal.SIGTERM) != before
    assert signal.getsignal(signal.SIGTERM) == before
    assert os.getpid()  # the test process itself was never signalled


def test_rewritten_artifact_replaces_its_entry(workspace):
    with Workspace(workspace).start_run("job", "ckpt") as run:
        path = run.artifacts_dir / "last.pt"
        path.write_bytes(b"one")
        run.add_artifact(path, ArtifactKind.CHECKPOINT)
        path.write_bytes(b"two")
        run.add_artifact(path, ArtifactKind.CHECKPOINT)
    (entry,) = Workspace(workspace).load_run(run.id).outputs
    assert entry.digest == sha256_file(path)


@pytest.mark.parametrize("name", ["walk\n", "walk\r\n", "walk\nx"])
def test_names_match_their_pattern_in_full(name):
    """`re.match` with `$` accepted a trailing newline: a run or dataset named "walk\n"."""
    from flexrl.store.format import check_name, check_tag, parse_ref

    with pytest.raises(FlexrlError, match="invalid run name"):
        Workspace("unused").start_run("job", name)
    with pytest.raises(FlexrlError, match="invalid dataset name"):
        check_name(name)
    with pytest.raises(FlexrlError, match="invalid tag"):
        check_tag(name)
    with pytest.raises(FlexrlError):
        parse_ref(f"walk@{name}")
    with pytest.raises(FlexrlError):
        parse_ref("walk@v1\n")


def test_a_damaged_run_json_is_skipped_with_a_warning(workspace, cli):
    ws = Workspace(workspace)
    with ws.start_run("job", "good"):
        pass
    with ws.start_run("job", "bad") as bad:
        pass
    damaged = bad.dir / "run.json"
    damaged.write_text('{"id": "trunc')  # a torn or hand-edited file

    result = cli("runs", "ls", "--workspace", str(workspace))
    assert result.returncode == 0, result.stderr
    assert "good" in result.stdout and bad.id not in result.stdout
    (warning,) = result.stderr.strip().splitlines()  # one line, naming the file
    assert warning.startswith("warning: skipping ") and str(damaged) in warning

    result = cli("runs", "show", "good", "--workspace", str(workspace))  # lookup by name
    assert result.returncode == 0, result.stderr
    assert "good" in result.stdout and str(damaged) in result.stderr

    # Asked for by its id, the damaged run is an error that says what to do.
    result = cli("runs", "show", bad.id, "--workspace", str(workspace))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(damaged) in line and "not a valid run record" in line and "repair it" in line
