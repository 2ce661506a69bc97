"""A resumed run ends with exactly the weights of a run that was never interrupted (on CPU).

Both ways of stopping are covered: an interruption (SIGTERM/Ctrl-C), which saves the last
update boundary, and a crash, after which the newest periodic checkpoint is used. Episodes are
short so that resets, truncations and their bootstrapping happen inside the short runs.
"""

from __future__ import annotations

import csv
import io
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from flexrl.config import EnvConfig, TrainRecipe, validate_recipe
from flexrl.rl import load_checkpoint, train_ppo
from flexrl.rl.envs import get_vector_env_state, make_vector_env, set_vector_env_state
from flexrl.workspace import RunInterrupted, Workspace
from flexrl.workspace.records import ArtifactKind, RunStatus

UPDATES = 6


def small_recipe(env_id: str, checkpoint_every: int, vectorization: str = "sync") -> TrainRecipe:
    """`env_id` "skill": the goal task with every Humanoid option the learner holds state for
    (the tracking observation, the mirror loss, a command curriculum that widens every update)."""
    env: dict = {"id": env_id}
    ppo: dict = {}
    if env_id == "skill":
        env = {
            "task": "goal",
            "observation_frame": "heading",
            "observe_tracking": True,
            "command": {"curriculum_steps": UPDATES * 2 * 64},
        }
        ppo = {"mirror_coef": 0.1}
    return validate_recipe(
        {
            "name": "resume",
            "seed": 3,
            "env": {**env, "num_envs": 2, "max_episode_steps": 40, "vectorization": vectorization},
            "ppo": {
                "total_steps": UPDATES * 2 * 64,
                "num_steps": 64,
                "num_minibatches": 4,
                "update_epochs": 2,
                "hidden_sizes": [32, 32],
                "checkpoint_every": checkpoint_every,
                **ppo,
            },
        },
        TrainRecipe,
    )


def stop_at_update(run, update: int, error: BaseException) -> None:
    """Make `run` raise `error` while logging the metrics of `update` (mid-training)."""
    log = run.log_metrics
    calls = 0

    def failing_log(step, metrics):
        nonlocal calls
        calls += 1
        log(step, metrics)
        if calls == update:
            raise error

    run.log_metrics = failing_log


@pytest.mark.parametrize(
    ("env_id", "checkpoint_every", "stop_at", "error", "expected_status", "vectorization"),
    [
        ("InvertedPendulum-v5", 0, 3, RunInterrupted(signal.SIGTERM), RunStatus.INTERRUPTED,
         "sync"),
        ("Humanoid-v5", 2, 5, RuntimeError("crash"), RunStatus.FAILED, "sync"),
        # Envs in worker processes: their state crosses the process boundary both ways, and
        # the result is still that of the in-process straight run.
        ("Humanoid-v5", 2, 5, RuntimeError("crash"), RunStatus.FAILED, "async"),
        ("skill", 2, 3, RuntimeError("crash"), RunStatus.FAILED, "threads"),
    ],
)  # fmt: skip
def test_resume_equals_uninterrupted(
    tmp_path: Path, env_id, checkpoint_every, stop_at, error, expected_status, vectorization
):
    ws = Workspace(tmp_path / "ws")
    in_process = small_recipe(env_id, checkpoint_every)
    with ws.start_run("train", "straight", recipe=in_process) as straight:
        train_ppo(in_process, straight, progress=False)

    recipe = small_recipe(env_id, checkpoint_every, vectorization)

    with pytest.raises(type(error)), ws.start_run("train", "stopped", recipe=recipe) as stopped:
        stop_at_update(stopped, stop_at, error)
        train_ppo(recipe, stopped, progress=False)
    stopped_record = ws.load_run(stopped.id)
    assert stopped_record.status == expected_status
    last = [a for a in stopped_record.outputs if a.kind == ArtifactKind.CHECKPOINT][-1]
    assert last.role == "last" and last.digest
    resumed_from_update = load_checkpoint(ws.root / last.ref)["update"]
    assert 0 < resumed_from_update < UPDATES

    with ws.start_run("train", "resumed", recipe=recipe) as resumed:
        train_ppo(recipe, resumed, resume_from=stopped_record, progress=False)

    a = load_checkpoint(straight.dir / "artifacts" / "final.pt")
    b = load_checkpoint(resumed.dir / "artifacts" / "final.pt")
    assert a["update"] == b["update"] == UPDATES
    assert a["global_step"] == b["global_step"]
    assert a["agent"].keys() == b["agent"].keys()
    for name in a["agent"]:
        assert torch.equal(a["agent"][name], b["agent"][name]), name
    for key in ("exp_avg", "exp_avg_sq"):
        for i, state in a["optimizer"]["state"].items():
            assert torch.equal(state[key], b["optimizer"]["state"][i][key])
    assert torch.equal(a["obs_rms"]["mean"], b["obs_rms"]["mean"])
    assert torch.equal(a["reward_scaler"]["returns"], b["reward_scaler"]["returns"])
    assert torch.equal(a["next_obs"], b["next_obs"])

    # Lineage: the resumed run names the run and the exact checkpoint it continued from.
    inputs = ws.load_run(resumed.id).inputs
    assert any(
        i.kind == ArtifactKind.RUN and i.ref == stopped.id and i.role == "resume" for i in inputs
    )
    assert any(i.kind == ArtifactKind.CHECKPOINT and i.digest == last.digest for i in inputs)

    # One metrics history: the stopped run's rows up to its checkpoint, then the resumed run's,
    # the same rows as the run that was never interrupted (SPS and times aside).
    def rows(run_dir: Path) -> list[tuple[str, str]]:
        with open(run_dir / "metrics.csv", newline="") as f:
            return [(r["step"], r["value_loss"]) for r in csv.DictReader(f)]

    assert rows(resumed.dir) == rows(straight.dir)
    if env_id == "skill":  # the curriculum widened at every update, where it stood when stopped
        with open(resumed.dir / "metrics.csv", newline="") as f:
            progress = [float(r["command_progress"]) for r in csv.DictReader(f)]
        assert progress == [u / UPDATES for u in range(UPDATES)]
    assert len(rows(resumed.dir)) == UPDATES and resumed_from_update < UPDATES
    assert ws.load_run(resumed.id).metrics_rows == UPDATES


@pytest.mark.parametrize(
    "cfg",
    [
        EnvConfig(id="InvertedPendulum-v5", num_envs=2, max_episode_steps=25),
        EnvConfig(id="Humanoid-v5", num_envs=2, max_episode_steps=25),
        pytest.param(
            EnvConfig(task="goal", num_envs=2, max_episode_steps=25, command={"resample_steps": 7}),
            id="humanoid-goal-task",
        ),
    ],
    ids=lambda cfg: cfg.id,
)
def test_env_state_round_trip_is_exact(cfg: EnvConfig):
    rng = np.random.default_rng(0)
    original = make_vector_env(cfg)
    original.reset(seed=[0, 1])
    for _ in range(30):
        original.step(rng.uniform(-0.3, 0.3, original.action_space.shape))
    buffer = io.BytesIO()
    torch.save(get_vector_env_state(original), buffer)
    buffer.seek(0)
    copy = make_vector_env(cfg)
    copy.reset(seed=[7, 8])  # different seeds: everything must come from the saved state
    set_vector_env_state(copy, torch.load(buffer, weights_only=True))
    for _ in range(60):  # long enough for both envs to end an episode and reset
        action = rng.uniform(-0.4, 0.4, original.action_space.shape)
        for x, y in zip(original.step(action)[:4], copy.step(action)[:4], strict=True):
            assert np.array_equal(x, y)
