"""`flexrl finetune bc|dt` end to end in subprocesses, lineage, resume, --init-from, actors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flexrl.offline.actors import BCActor, DTActor, load_actor
from flexrl.store import resolve
from flexrl.workspace import ArtifactKind, RunStatus, Workspace
from tests.offline.conftest import TINY_DT, expert_action, write_dataset

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--set", "train.max_steps=30",
    "--set", "train.steps_per_epoch=15",
    "--set", "train.batch_size=16",
    "--set", "train.val_batches=2",
    "--set", "train.log_every_n_steps=5",
    "--set", "train.warmup_steps=5",
]  # fmt: skip
TINY_DT_SETS = [f"dt.{k}={v}" for k, v in TINY_DT.items()]


def flexrl(ws: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLEXRL_WORKSPACE": str(ws)}
    return subprocess.run(
        [sys.executable, "-m", "flexrl", *args]
        + (["--no-progress"] if args[0] == "finetune" and "--help" not in args else []),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def finetune(ws: Path, kind: str, *extra: str) -> subprocess.CompletedProcess:
    sets = [x for s in TINY_DT_SETS for x in ("--set", s)] if kind == "dt" else []
    recipe = REPO / "recipes" / f"finetune_{kind}.yaml"
    return flexrl(ws, "finetune", kind, "--config", str(recipe), *TINY, *sets, *extra)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("finetune-ws")
    write_dataset(ws, "walk")
    return ws


@pytest.fixture(scope="module")
def bc_run(ws: Path):
    result = finetune(ws, "bc", "--dataset", "walk", "--name", "bc1")
    assert result.returncode == 0, result.stderr[-3000:]
    return Workspace(ws).resolve_run("bc1")


@pytest.fixture(scope="module")
def dt_run(ws: Path):
    result = finetune(ws, "dt", "--dataset", "walk@v1", "--name", "dt1")
    assert result.returncode == 0, result.stderr[-3000:]
    return Workspace(ws).resolve_run("dt1")


def outputs(record, role: str):
    return [a for a in record.outputs if a.kind == ArtifactKind.CHECKPOINT and a.role == role]


@pytest.mark.parametrize("kind", ["bc", "dt"])
def test_finetune_records_lineage_metrics_and_checkpoints(ws, bc_run, dt_run, kind) -> None:
    record = bc_run if kind == "bc" else dt_run
    assert record.kind == f"finetune-{kind}" and record.status == RunStatus.COMPLETED
    version = resolve("walk@v1", ws)
    (data,) = [a for a in record.inputs if a.kind == ArtifactKind.DATASET]
    assert (data.ref, data.digest) == ("walk@v1", version.digest)
    assert {"loss", "val_loss"} <= set(record.metrics_last)
    run_dir = Workspace(ws).run_dir(record.id)
    assert (run_dir / "metrics.csv").is_file()
    assert (run_dir / "lightning" / "metrics.csv").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    (last,) = outputs(record, "last")
    (policy,) = outputs(record, "policy")
    assert record.outputs[-1] == policy  # the newest checkpoint is what eval picks
    for artifact in (last, policy):  # every checkpoint loads safely
        data = torch.load(ws / artifact.ref, map_location="cpu", weights_only=True)
        assert data["flexrl" if artifact is last else "format"]
    listing = flexrl(ws, "runs", "ls", "--json")
    assert listing.returncode == 0 and record.id in listing.stdout


def test_resume_continues_from_last(ws, dt_run) -> None:
    result = flexrl(
        ws, "finetune", "dt", "--resume", dt_run.id, "--set", "train.max_steps=45", "--name", "dt1r"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = Workspace(ws).resolve_run("dt1r")
    assert any(a.kind == ArtifactKind.RUN and a.ref == dt_run.id for a in record.inputs)
    assert any(a.kind == ArtifactKind.DATASET and a.ref == "walk@v1" for a in record.inputs)
    (policy,) = outputs(record, "policy")
    data = torch.load(ws / policy.ref, weights_only=True)
    assert data["global_step"] == 45  # 30 from the first run, 15 more
    # One metrics history: the first run's rows, then this one's (logged every 5 steps).
    with open(Workspace(ws).run_dir(record.id) / "metrics.csv", newline="") as f:
        steps = sorted({int(r["step"]) for r in csv.DictReader(f)})
    assert steps[0] == 5 and steps[-1] == 45 and 30 in steps


def test_resume_refuses_a_damaged_checkpoint_before_a_run_exists(ws) -> None:
    result = finetune(ws, "bc", "--dataset", "walk", "--name", "bc-damaged")
    assert result.returncode == 0, result.stderr[-3000:]
    (last,) = outputs(Workspace(ws).resolve_run("bc-damaged"), "last")
    path = ws / last.ref
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    before = len(Workspace(ws).list_runs())
    result = flexrl(ws, "finetune", "bc", "--resume", "bc-damaged")
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "changed since it was recorded" in line
    assert len(Workspace(ws).list_runs()) == before


@pytest.mark.parametrize("kind", ["bc", "dt"])
def test_a_diverging_loss_fails_the_run(ws, kind) -> None:
    """Before, an absurd learning rate trained on NaN weights and the run completed."""
    result = finetune(
        ws, kind, "--dataset", "walk", "--name", f"{kind}-diverges",
        "--set", "train.learning_rate=1e30", "--set", "train.grad_clip=null",
        "--set", "train.warmup_steps=0",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {kind.upper()} diverged at step "), last
    assert "the loss is nan" in last or "the loss is inf" in last
    record = Workspace(ws).resolve_run(f"{kind}-diverges")
    assert record.status == RunStatus.FAILED and "diverged" in (record.error or "")


def test_init_from_starts_from_another_runs_weights(ws, bc_run) -> None:
    result = finetune(
        ws, "bc", "--dataset", "walk", "--init-from", "bc1", "--name", "bc2",
        "--set", "train.max_steps=1", "--set", "train.learning_rate=1e-12",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = Workspace(ws).resolve_run("bc2")
    (init,) = [a for a in record.inputs if a.kind == ArtifactKind.CHECKPOINT]
    assert init.role == "init" and init.digest == outputs(bc_run, "policy")[0].digest
    before = torch.load(ws / outputs(bc_run, "policy")[0].ref, weights_only=True)["state_dict"]
    after = torch.load(ws / outputs(record, "policy")[0].ref, weights_only=True)["state_dict"]
    for key in before:  # one step at lr 1e-12 leaves the weights where they started
        torch.testing.assert_close(after[key], before[key], rtol=1e-6, atol=1e-6)


def test_actors_act_within_bounds(ws, bc_run, dt_run) -> None:
    bc = load_actor(ws / outputs(bc_run, "policy")[0].ref)
    dt = load_actor(ws / outputs(dt_run, "policy")[0].ref, target_return=5.0)
    assert isinstance(bc, BCActor) and isinstance(dt, DTActor)
    rng = np.random.default_rng(0)
    goal = np.array([0.5, 0.0, 0.1])
    low, high = bc.net.act_scaler.denormalize(torch.tensor([-1.0, 1.0])[:, None]).numpy()
    assert np.all(low > -1) and np.all(high < 1)  # tanh(obs + goal) never quite reaches +-1
    for actor in (bc, dt):
        actor.reset(0)
        actor.reset(1)
        for _ in range(8):
            obs = rng.normal(size=(2, 6))
            action = actor.act([0, 1], obs, np.stack([goal, goal]))
            assert action.shape == (2, 2) and np.abs(action).max() <= 1
            # tanh outputs are mapped onto the range of the dataset's actions
            assert np.all(action >= low - 1e-6) and np.all(action <= high + 1e-6)
            actor.observe([0, 1], np.array([1.5, 0.5]))
    assert len(dt.context[0]) == TINY_DT["context_len"]  # only the last K steps are kept
    assert dt.return_to_go[0] == pytest.approx(5.0 - 8 * 1.5)
    assert dt.return_to_go[1] == pytest.approx(5.0 - 8 * 0.5)  # each slot its own account
    # a slot's actions do not depend on the others': slot 1 alone acts as in the batch
    dt.reset(0)
    dt.reset(1)
    obs = rng.normal(size=(2, 6))
    together = dt.act([0, 1], obs, np.stack([goal, goal]))
    dt.reset(1)
    alone = dt.act([1], obs[1:], goal[None])
    np.testing.assert_allclose(alone[0], together[1], atol=1e-6)
    dt.reset(0)
    assert dt.return_to_go[0] == 5.0 and len(dt.context[0]) == 0


def test_bc_learns_the_behaviour(ws) -> None:
    """Longer BC training imitates the behaviour policy far better than an untrained one."""
    result = finetune(ws, "bc", "--dataset", "walk", "--name", "bc-long",
                      "--set", "train.max_steps=200", "--set", "train.steps_per_epoch=200",
                      "--set", "train.learning_rate=3e-3")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    actor = load_actor(ws / outputs(Workspace(ws).resolve_run("bc-long"), "policy")[0].ref)
    rng = np.random.default_rng(1)
    errors = []
    for _ in range(50):
        obs, goal = rng.normal(size=6), rng.normal(size=3)
        action = actor.act([0], obs[None], goal[None])[0]
        errors.append(np.abs(action - expert_action(obs, goal)).mean())
    assert np.mean(errors) < 0.15


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "nope"], "nope"),
        (["--dataset", "walk", "--set", "train.max_stepz=3"], "max_stepz"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, message) -> None:
    ws = tmp_path / "ws"
    write_dataset(ws, "walk", episodes=3)
    result = finetune(ws, "bc", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (ws / "runs").exists() or not any((ws / "runs").iterdir())


def test_help_lists_both_commands(tmp_path) -> None:
    result = flexrl(tmp_path, "finetune", "--help")
    assert result.returncode == 0
    assert "bc" in result.stdout and "dt" in result.stdout


def test_dt_evaluation_records_the_target_return(tmp_path) -> None:
    """A DT's score depends on the return it is conditioned on: eval shows and records it."""
    ws = tmp_path / "ws"
    collected = flexrl(
        ws, "collect", "--policy", "random", "--env-id", "InvertedPendulum-v5",
        "--dataset", "pend", "--episodes", "6",
    )  # fmt: skip
    assert collected.returncode == 0, collected.stderr[-3000:]
    trained = finetune(ws, "dt", "--dataset", "pend", "--name", "dt", "--set", "train.max_steps=5")
    assert trained.returncode == 0, trained.stderr[-3000:]
    (policy,) = outputs(Workspace(ws).resolve_run("dt"), "policy")
    best = torch.load(ws / policy.ref, weights_only=True)["target_return"]  # the data's best

    report = flexrl(ws, "eval", "dt", "--episodes", "1", "--json")
    assert report.returncode == 0, report.stderr[-3000:]
    assert json.loads(report.stdout)["settings"]["target_return"] == pytest.approx(best)
    table = flexrl(ws, "eval", "dt", "--episodes", "1", "--target-return", "7.5")
    assert table.returncode == 0, table.stderr[-3000:]
    assert "target return 7.5" in " ".join(table.stdout.split())  # the title may wrap
    (recorded,) = [r for r in Workspace(ws).list_runs() if r.kind == "eval"][-1:]
    eval_json = next(a for a in recorded.outputs if a.role == "metrics")
    assert json.loads((ws / eval_json.ref).read_text())["settings"]["target_return"] == 7.5
