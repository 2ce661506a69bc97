"""`flexrl train` end to end in real subprocesses: a completed run, SIGTERM, --resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flexrl.fileio import sha256_file
from flexrl.rl import load_checkpoint, load_policy
from flexrl.workspace import Workspace
from flexrl.workspace.records import ArtifactKind, RunStatus

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = "recipes/quickstart.yaml"


def checkpoints(ws: Workspace, run_id: str):
    return [a for a in ws.load_run(run_id).outputs if a.kind == ArtifactKind.CHECKPOINT]


def wait_for_two_updates(process: subprocess.Popen, workspace: Path) -> None:
    """Until the training run in `workspace` has logged two updates (it must stay alive)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        metrics = list(workspace.glob("runs/*/metrics.csv"))
        if metrics and len(metrics[0].read_text().splitlines()) >= 3:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    raise AssertionError("the run logged fewer than two updates in 120 s")


def test_train_records_a_completed_run(cli, workspace):
    # 2 updates of 4 envs x 512 steps.
    result = cli(
        "train", "--config", QUICKSTART, "--set", "ppo.total_steps=4096",
        "--name", "quick", "--workspace", str(workspace),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ws = Workspace(workspace)
    (record,) = ws.list_runs()
    assert record.status == RunStatus.COMPLETED and record.name == "quick"
    assert record.id in result.stdout

    run_dir = ws.run_dir(record.id)
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2048, 4096]
    for column in ("value_loss", "policy_loss", "approx_kl", "clipfrac", "explained_variance",
                   "learning_rate", "SPS", "episodic_return", "episodic_length"):  # fmt: skip
        assert rows[-1][column] != "", column
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    (final,) = checkpoints(ws, record.id)
    assert final.role == "final"
    path = workspace / final.ref
    assert final.digest == sha256_file(path)
    assert torch.load(path, weights_only=True)["global_step"] == 4096
    policy = load_policy(path)
    assert policy.act(torch.zeros(4).numpy()).shape == (1,)


def test_anneal_steps_sets_the_learning_rate_schedule_apart_from_the_run_length(cli, workspace):
    # 2 updates of 2048 steps on a schedule that reaches zero at 8192 steps: the rate falls by
    # a quarter per update, and the run stops at total_steps with the rate still at 3/4.
    result = cli(
        "train", "--config", QUICKSTART, "--set", "ppo.total_steps=4096",
        "--set", "ppo.anneal_steps=8192", "--set", "ppo.learning_rate=0.001",
        "--workspace", str(workspace),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (metrics,) = workspace.glob("runs/*/metrics.csv")
    with open(metrics, newline="") as f:
        rates = [float(r["learning_rate"]) for r in csv.DictReader(f)]
    assert rates == pytest.approx([0.001, 0.00075])


def test_sigterm_leaves_an_interrupted_run_with_a_checkpoint_that_resumes(cli, workspace):
    process = subprocess.Popen(
        [sys.executable, "-m", "flexrl", "train", "--config", QUICKSTART,
         "--set", "ppo.total_steps=10000000", "--workspace", str(workspace)],
        cwd=REPO, env={**os.environ, "FLEXRL_DEBUG": ""},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_two_updates(process, workspace)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 128 + signal.SIGTERM  # the shell's convention for a signal
        assert stderr.strip().splitlines()[-1] == (
            "error: interrupted by SIGTERM; the run is recorded as interrupted"
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    ws = Workspace(workspace)
    (record,) = ws.list_runs()
    assert record.status == RunStatus.INTERRUPTED
    (last,) = checkpoints(ws, record.id)
    assert last.role == "last" and last.digest == sha256_file(workspace / last.ref)
    state = load_checkpoint(workspace / last.ref)  # weights_only
    assert state["update"] >= 1 and state["global_step"] == state["update"] * 2048

    # --resume continues from it (here for one more update) with the run's own recipe (no
    # --config), under the run's name, and records where it came from.
    total = state["global_step"] + 2048
    result = cli(
        "train", "--set", f"ppo.total_steps={total}", "--resume", record.name,
        "--workspace", str(workspace),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    resumed = ws.list_runs()[-1]
    assert resumed.status == RunStatus.COMPLETED
    assert resumed.name == record.name and ws.resolve_run(record.name).id == resumed.id
    # One metrics history: every update from the first, none twice.
    with open(ws.run_dir(resumed.id) / "metrics.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(2048, total + 1, 2048))
    assert {(i.kind, i.role) for i in resumed.inputs} == {
        (ArtifactKind.RUN, "resume"),
        (ArtifactKind.CHECKPOINT, "resume"),
    }
    assert any(i.digest == last.digest for i in resumed.inputs)
    (final,) = checkpoints(ws, resumed.id)
    assert load_checkpoint(workspace / final.ref)["global_step"] == total


@pytest.mark.parametrize(
    "recipe",
    [
        [QUICKSTART, "--set", "env.vectorization=async"],
        # Humanoid envs stepped on threads: Ctrl-C lands while the main thread waits for them
        ["recipes/humanoid_walk_forward.yaml", "--set", "env.num_envs=4",
         "--set", "ppo.num_steps=16"],
    ],
    ids=["env-worker-processes", "env-threads"],
)  # fmt: skip
def test_ctrl_c_with_env_workers_interrupts_cleanly(workspace, recipe):
    """Ctrl-C reaches the whole process group, env worker processes included: the run still
    ends as interrupted with a checkpoint, and no worker is left behind."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flexrl", "train", "--config", *recipe,
         "--set", "ppo.total_steps=10000000", "--workspace", str(workspace)],
        cwd=REPO, env={**os.environ, "FLEXRL_DEBUG": ""}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell's background jobs start with SIGINT ignored; a terminal's foreground job not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        wait_for_two_updates(process, workspace)
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C does
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert stderr.strip().splitlines()[-1] == "error: interrupted"
        deadline = time.monotonic() + 15  # exited workers are reaped by init, in a moment
        while True:  # until the group is empty: every worker has exited
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, "env worker processes outlived the run"
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    (record,) = Workspace(workspace).list_runs()
    assert record.status == RunStatus.INTERRUPTED
    (last,) = checkpoints(Workspace(workspace), record.id)
    # Update 2's metrics row is written just before its state is snapshotted: a Ctrl-C between
    # the two keeps update 1, the last complete boundary.
    assert last.role == "last" and load_checkpoint(workspace / last.ref)["update"] >= 1


def test_resume_refuses_a_damaged_checkpoint_before_a_run_exists(cli, workspace):
    result = cli(
        "train", "--config", QUICKSTART, "--set", "ppo.total_steps=2048", "--name", "quick",
        "--workspace", str(workspace),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ws = Workspace(workspace)
    (final,) = checkpoints(ws, ws.resolve_run("quick").id)
    path = workspace / final.ref
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # a flipped tail
    result = cli("train", "--resume", "quick", "--workspace", str(workspace))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "changed since it was recorded" in line
    assert len(ws.list_runs()) == 1


def test_a_diverging_loss_fails_the_run(cli, workspace):
    """One update at an absurd learning rate leaves NaN weights: before, the run completed
    with value_loss=nan and a NaN final.pt."""
    result = cli(
        "train", "--config", QUICKSTART, "--set", "ppo.total_steps=2048",
        "--set", "ppo.learning_rate=1e30", "--workspace", str(workspace),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: PPO diverged at update 1: the loss is nan"), last
    (record,) = Workspace(workspace).list_runs()
    assert record.status == RunStatus.FAILED and "diverged" in (record.error or "")
    assert not checkpoints(Workspace(workspace), record.id)  # no NaN policy to evaluate


def test_init_from_starts_a_new_run_from_a_learned_policy(cli, workspace):
    """ppo.init_from: the new run's first policy is the source's (a learning rate too small to
    move the weights leaves them equal), its normaliser continues the source's statistics, and
    the source is recorded as the run's input. A bad source is refused before a run exists."""
    base = cli(
        "train", "--config", QUICKSTART, "--set", "ppo.total_steps=4096", "--name", "base",
        "--workspace", str(workspace),
    )  # fmt: skip
    assert base.returncode == 0, base.stderr
    ws = Workspace(workspace)
    (base_ckpt,) = checkpoints(ws, ws.resolve_run("base").id)

    for source, message in [
        ("nope", "ppo.init_from: 'nope' is neither a checkpoint file nor a run"),
        ("zoo:walk_forward", "ppo.init_from: "),  # a Humanoid policy, not InvertedPendulum's
    ]:
        bad = cli(
            "train", "--config", QUICKSTART, "--set", "ppo.total_steps=2048",
            "--set", f"ppo.init_from={source}", "--workspace", str(workspace),
        )  # fmt: skip
        assert bad.returncode == 2, bad.stderr
        (line,) = bad.stderr.strip().splitlines()
        assert line.startswith(f"error: {message}"), line
        assert [r.name for r in ws.list_runs()] == ["base"]

    fine = cli(
        "train", "--config", QUICKSTART, "--set", "ppo.total_steps=2048",
        "--set", "ppo.learning_rate=1e-12", "--set", "ppo.init_from=base", "--name", "fine",
        "--workspace", str(workspace),
    )  # fmt: skip
    assert fine.returncode == 0, fine.stderr
    record = ws.resolve_run("fine")
    (init,) = [a for a in record.inputs if a.role == "init"]
    assert init.digest == base_ckpt.digest
    (fine_ckpt,) = checkpoints(ws, record.id)
    before = load_checkpoint(workspace / base_ckpt.ref)
    after = load_checkpoint(workspace / fine_ckpt.ref)
    for name, weights in before["agent"].items():
        torch.testing.assert_close(after["agent"][name], weights, rtol=0, atol=1e-6)
    assert after["global_step"] == 2048  # a new run: steps count from 0
    assert after["obs_rms"]["count"] > before["obs_rms"]["count"]


def test_init_from_refuses_a_policy_that_observed_another_frame():
    from flexrl.config import TrainRecipe, load_recipe
    from flexrl.errors import FlexrlError
    from flexrl.rl.checkpoint import check_init_source
    from flexrl.zoo import zoo_path

    walker = zoo_path("zoo:walk_forward")  # trained on the heading-frame observation
    recipe = load_recipe(REPO / "recipes/humanoid_walk_forward.yaml", TrainRecipe)
    check_init_source(walker, recipe, 351, 17)
    world = recipe.model_copy(
        update={"env": recipe.env.model_copy(update={"observation_frame": "world"})}
    )
    with pytest.raises(FlexrlError, match="observed the heading frame, this recipe the world"):
        check_init_source(walker, world, 351, 17)


def test_init_from_a_policy_without_the_tracking_values_widens_it_and_not_back():
    from flexrl.config import TrainRecipe, load_recipe
    from flexrl.errors import FlexrlError
    from flexrl.rl.checkpoint import check_init_source
    from flexrl.zoo import zoo_path

    goal = zoo_path("zoo:goal")  # 351 observations
    recipe = load_recipe(REPO / "recipes/humanoid_multitask.yaml", TrainRecipe)
    tracking = recipe.model_copy(
        update={"env": recipe.env.model_copy(update={"observe_tracking": True})}
    )
    check_init_source(goal, tracking, 357, 17)  # widened when loaded (widen_for_tracking)
    with pytest.raises(FlexrlError, match=r"network for 351 observations.*is 360"):
        check_init_source(goal, tracking, 360, 17)


def test_init_from_a_policy_with_the_tracking_values_needs_them(tmp_path):
    from flexrl.config import TrainRecipe, load_recipe
    from flexrl.errors import FlexrlError
    from flexrl.rl.checkpoint import check_init_source, load_checkpoint
    from flexrl.zoo import zoo_path

    untracked = ["env.observe_tracking=false", "env.reward.tracking_yaw_rate_mean=0",
                 "env.reward.yaw_rate_wobble=0"]  # fmt: skip
    recipe = load_recipe(REPO / "recipes/humanoid_multitask.yaml", TrainRecipe, untracked)
    state = load_checkpoint(zoo_path("zoo:goal"))
    state["recipe"]["env"]["observe_tracking"] = True
    torch.save(state, tmp_path / "tracking.pt")
    with pytest.raises(FlexrlError, match=r"set env\.observe_tracking: true"):
        check_init_source(tmp_path / "tracking.pt", recipe, 351, 17)
