"""HumanoidVectorEnv (threads) against gymnasium's SyncVectorEnv over the same single envs."""

from __future__ import annotations

import numpy as np
import pytest

from flexrl.config import EnvConfig
from flexrl.rl.envs import get_vector_env_state, make_vector_env, set_vector_env_state


def assert_same(x, y, path: str = "infos") -> None:
    if isinstance(x, dict):
        assert set(x) == set(y), f"{path}: keys differ: {set(x) ^ set(y)}"
        for key in x:
            assert_same(x[key], y[key], f"{path}/{key}")
    elif x.dtype == object:
        for u, v in zip(x, y, strict=True):
            assert (u is None and v is None) or np.array_equal(u, v), path
    else:
        assert x.dtype == y.dtype and np.array_equal(x, y), path


def configs(**env: object) -> tuple[EnvConfig, EnvConfig]:
    sync = EnvConfig(num_envs=5, max_episode_steps=30, vectorization="sync", **env)
    return sync, sync.model_copy(update={"vectorization": "threads", "sim_threads": 2})


@pytest.mark.parametrize(
    "env",
    [
        {"task": "walk_forward"},
        {"task": "turn_left", "observation_frame": "heading"},  # rotated in a batch
        # running means across autoresets, and the reward term that reads them
        {"task": "turn_right", "observe_tracking": True, "reward": {"yaw_rate_wobble": 2.0}},
        # several tasks, commands resampled within episodes, episodes ending by both flags
        {
            "task": "goal",
            "task_weights": {"goal": 1.0, "turn_left": 1.0, "walk_forward": 1.0},
            "command": {"resample_steps": 7},
        },
    ],
)
def test_threads_match_sync_bit_for_bit(env: dict) -> None:
    sync_cfg, threads_cfg = configs(**env)
    sync, threads = make_vector_env(sync_cfg), make_vector_env(threads_cfg)
    obs_a, info_a = sync.reset(seed=list(range(5)))
    obs_b, info_b = threads.reset(seed=list(range(5)))
    assert np.array_equal(obs_a, obs_b)
    assert_same(info_a, info_b)
    rng = np.random.default_rng(0)
    terminated = truncated = 0
    for _ in range(120):
        action = rng.uniform(-0.4, 0.4, (5, 17))
        a, b = sync.step(action), threads.step(action)
        for x, y in zip(a[:4], b[:4], strict=True):
            assert x.dtype == y.dtype and np.array_equal(x, y)
        assert_same(a[4], b[4])
        terminated += a[2].sum()
        truncated += a[3].sum()
    assert terminated > 0 and truncated > 0  # autoreset was exercised both ways
    sync.close()
    threads.close()


def test_threads_state_restores_exactly() -> None:
    """A resumed run continues bit-identically: state taken mid-episode and loaded into fresh
    envs gives the same future."""
    _, cfg = configs(task="goal", command={"resample_steps": 5}, observe_tracking=True)
    envs = make_vector_env(cfg)
    envs.reset(seed=3)
    rng = np.random.default_rng(1)
    for _ in range(17):
        envs.step(rng.uniform(-0.4, 0.4, (5, 17)))
    state = get_vector_env_state(envs)
    actions = rng.uniform(-0.4, 0.4, (40, 5, 17))
    expected = [envs.step(a)[:4] for a in actions]
    fresh = make_vector_env(cfg)
    fresh.reset(seed=99)
    set_vector_env_state(fresh, state)
    for a, want in zip(actions, expected, strict=True):
        got = fresh.step(a)[:4]
        for x, y in zip(want, got, strict=True):
            assert np.array_equal(x, y)


@pytest.mark.parametrize("vectorization", ["threads", "sync"])
def test_command_progress_reaches_every_env(vectorization: str) -> None:
    from flexrl.rl.envs import set_every_env

    start = (0.6, 0.1, -0.2)
    cfg = EnvConfig(
        task="goal",
        num_envs=3,
        max_episode_steps=30,
        vectorization=vectorization,
        command={"curriculum_steps": 10, "curriculum_start": start},
    )
    envs = make_vector_env(cfg)
    _, infos = envs.reset(seed=0)
    assert not np.allclose(infos["goal"], start)  # outside training: the full ranges
    set_every_env(envs, "command_progress", 0.0)
    _, infos = envs.reset(seed=0)
    np.testing.assert_array_equal(infos["goal"], np.tile(start, (3, 1)))
    envs.close()
