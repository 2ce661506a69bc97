"""Small real datasets (written with the store's ShardWriter) and tiny recipes for offline tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flexrl.store import ShardWriter, make_episode

OBS_DIM, ACT_DIM, GOAL_DIM = 6, 2, 3
TINY_DT = {"context_len": 5, "hidden_size": 32, "n_layer": 2, "n_head": 2, "dropout": 0.0}


def expert_action(obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """What the behaviour policy did: a smooth function of the observation and the goal."""
    return np.tanh(obs[..., :2] + 0.5 * goal[..., :2]).astype(np.float32)


def write_dataset(workspace: Path, name: str = "tiny", episodes: int = 12, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with ShardWriter(name, workspace, durable=False, shard_episodes=5) as writer:
        for e in range(episodes):
            steps = int(rng.integers(8, 25))
            obs = rng.normal(size=(steps + 1, OBS_DIM)).astype(np.float32)
            goal = np.tile(rng.normal(size=GOAL_DIM), (steps, 1))
            actions = expert_action(obs[:-1], goal)
            writer.add(
                make_episode(
                    obs,
                    actions,
                    np.full(steps, float(e), np.float32),  # episode e has return e * steps
                    np.zeros(steps, bool),
                    np.arange(steps) == steps - 1,
                    goals=goal,
                    task="walk_forward",
                    seed=e,
                )
            )


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with dataset `tiny@v1` (12 episodes, 3 shards). Tests must not modify it."""
    ws = tmp_path_factory.mktemp("offline-ws")
    write_dataset(ws)
    return ws
