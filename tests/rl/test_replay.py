"""`flexrl train --record-to`: the training rollouts, stored as a replay dataset.

The stored episodes are checked against the training itself (the returns it logged per update),
against the simulator (replaying an episode's actions from its seed gives back its observations
and rewards), and across an interruption and --resume (no episode stored twice).
"""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import numpy as np
import pytest

from flexrl.config import TrainRecipe, validate_recipe
from flexrl.envs import make_flat_env
from flexrl.rl import train_ppo
from flexrl.store import open_dataset, resolve
from flexrl.workspace import RunInterrupted, Workspace
from flexrl.workspace.records import ArtifactKind

from .test_resume import stop_at_update

NUM_ENVS, NUM_STEPS, UPDATES = 2, 64, 5
BATCH = NUM_ENVS * NUM_STEPS


def recipe(checkpoint_every: int = 2) -> TrainRecipe:
    # The walk task (goals, reward terms) with short episodes: many end inside each update.
    return validate_recipe(
        {
            "name": "replay",
            "seed": 5,
            "env": {"task": "walk_forward", "num_envs": NUM_ENVS, "max_episode_steps": 30},
            "ppo": {
                "total_steps": UPDATES * BATCH,
                "num_steps": NUM_STEPS,
                "num_minibatches": 4,
                "update_epochs": 1,
                "hidden_sizes": [16, 16],
                "checkpoint_every": checkpoint_every,
            },
        },
        TrainRecipe,
    )


def episodes_of(ws: Workspace, ref: str):
    dataset = open_dataset(ref, ws.root)
    return [dataset.episode(i) for i in range(len(dataset))]


def fingerprint(ep) -> tuple:
    return (len(ep.actions), ep.observations[0].tobytes(), ep.actions.tobytes())


def test_recorded_episodes_are_the_training_rollouts(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    r = recipe()
    with ws.start_run("train", "rec", recipe=r) as run:
        train_ppo(r, run, record_to="walk-replay", progress=False)

    # A version per checkpoint (updates 2 and 4) and one at the end, all recorded as outputs.
    outputs = [a for a in ws.load_run(run.id).outputs if a.kind == ArtifactKind.DATASET]
    assert [a.ref for a in outputs] == ["walk-replay@v1", "walk-replay@v2", "walk-replay@v3"]
    assert all(a.role == "replay" and a.digest for a in outputs)
    episodes = episodes_of(ws, "walk-replay@v3")
    assert len(episodes) > 10

    # Each update's logged mean return is the mean of the stored episodes that ended in it.
    ended_in: dict[int, list[float]] = {}
    for ep in episodes:
        steps = ep.infos["train_step"]
        assert np.all(np.diff(steps) == NUM_ENVS)  # one env's consecutive steps
        assert ep.task == "walk_forward" and ep.goals.shape == (len(ep.actions), 3)
        assert "reward_terms.tracking_lin_vel" in ep.infos
        ended_in.setdefault(int(np.ceil(steps[-1] / BATCH)), []).append(float(ep.rewards.sum()))
    with open(run.dir / "metrics.csv", newline="") as f:
        logged = {
            int(row["step"]) // BATCH: float(row["episodic_return"])
            for row in csv.DictReader(f)
            if row["episodic_return"]
        }
    assert logged.keys() == ended_in.keys()
    for update, returns in ended_in.items():
        # stored rewards are float32 (the logged return summed the float64 ones)
        assert np.mean(returns) == pytest.approx(logged[update], rel=1e-6), update

    # Each env's first episode began from the reset seeded seed+i: replaying its stored actions
    # in a fresh env gives back its observations, rewards and end (as float32, how they are
    # stored).
    env = make_flat_env(r.env)
    f32 = np.float32
    assert episodes[0].observations.dtype == f32 and episodes[0].rewards.dtype == f32
    for i in range(NUM_ENVS):
        obs, _ = env.reset(seed=r.seed + i)
        (ep,) = [e for e in episodes if np.array_equal(e.observations[0], obs.astype(f32))]
        for t, action in enumerate(ep.actions):
            assert np.array_equal(obs.astype(f32), ep.observations[t])
            obs, reward, term, trunc, _ = env.step(action)
            assert f32(reward) == ep.rewards[t]
        assert np.array_equal(obs.astype(f32), ep.final_observation)
        assert term == ep.terminations[-1] and trunc == ep.truncations[-1]


def test_the_trainer_draws_training_commands(tmp_path: Path):
    # Every draw from the slow end (train_slow_prob 1): the recorded goals are training's, where
    # a fresh env (as eval and collect make) draws from the whole range.
    ws = Workspace(tmp_path / "ws")
    command = {"vx_range": [0.0, 1.0], "resample_steps": 10, "train_slow_prob": 1.0,
               "train_slow_width": 0.2}  # fmt: skip
    spec = recipe().model_dump()
    spec["env"].update(task="goal", command=command)
    r = validate_recipe(spec, TrainRecipe)
    with ws.start_run("train", "slow", recipe=r) as run:
        train_ppo(r, run, record_to="slow", progress=False)
    vx = np.concatenate([ep.goals[:, 0] for ep in episodes_of(ws, "slow")])
    assert len(vx) > 300 and vx.min() >= 0.0 and vx.max() <= 0.2
    env = make_flat_env(r.env)
    fresh = [env.reset(seed=s)[1]["goal"][0] for s in range(20)]
    assert max(fresh) > 0.4
    env.close()


def test_interrupted_and_resumed_recording_stores_no_episode_twice(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    r = recipe(checkpoint_every=0)
    with ws.start_run("train", "straight", recipe=r) as straight:
        train_ppo(r, straight, record_to="straight", progress=False)
    with pytest.raises(RunInterrupted), ws.start_run("train", "stopped", recipe=r) as stopped:
        stop_at_update(stopped, 3, RunInterrupted(signal.SIGTERM))
        train_ppo(r, stopped, record_to="resumed", progress=False)
    # The interruption committed what the saved checkpoint (update 2) covers.
    (version,) = [a for a in ws.load_run(stopped.id).outputs if a.kind == ArtifactKind.DATASET]
    before = episodes_of(ws, version.ref)
    assert before and max(ep.infos["train_step"][-1] for ep in before) <= 2 * BATCH
    with ws.start_run("train", "resumed", recipe=r) as resumed:
        train_ppo(r, resumed, resume_from=ws.load_run(stopped.id), record_to="resumed",
                  progress=False)  # fmt: skip

    all_straight = [fingerprint(ep) for ep in episodes_of(ws, "straight")]
    combined = [fingerprint(ep) for ep in episodes_of(ws, "resumed")]
    assert len(set(combined)) == len(combined)  # nothing twice
    assert set(combined) <= set(all_straight)  # the same rollouts as without the interruption
    # Only the episodes running at the resume (one per env at most) are missing.
    assert len(all_straight) - NUM_ENVS <= len(combined) < len(all_straight)


def test_record_every_keeps_one_episode_in_k(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    r = recipe(checkpoint_every=0)
    with ws.start_run("train", "all", recipe=r) as run:
        train_ppo(r, run, record_to="all", progress=False)
    with ws.start_run("train", "third", recipe=r) as run:
        train_ppo(r, run, record_to="third", record_every=3, progress=False)
    every = {fingerprint(ep) for ep in episodes_of(ws, "all")}
    third = [fingerprint(ep) for ep in episodes_of(ws, "third")]
    assert set(third) <= every
    assert len(every) / 3 - NUM_ENVS <= len(third) <= len(every) / 3 + NUM_ENVS


def test_bad_record_targets_are_refused_before_a_run_starts(cli, workspace):
    base = ["train", "--config", "recipes/quickstart.yaml", "--set", "ppo.total_steps=512",
            "--workspace", str(workspace)]  # fmt: skip
    result = cli(*base, "--record-to", "pend@v1")
    assert result.returncode == 2
    assert "--record-to takes a dataset name" in result.stderr

    ok = cli(*base, "--record-to", "pend")  # InvertedPendulum: 4 observations
    assert ok.returncode == 0, ok.stderr
    assert "pend@v1" in ok.stdout
    before = resolve("pend", workspace)
    runs_before = len(Workspace(workspace).list_runs())
    wrong = cli(*base, "--set", "env.id=Hopper-v5", "--record-to", "pend")
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1] == (
        "error: --record-to: dataset 'pend' holds observations of shape (4,); the env gives "
        "(11,): record into a new dataset"
    )
    assert resolve("pend", workspace).digest == before.digest
    assert len(Workspace(workspace).list_runs()) == runs_before
