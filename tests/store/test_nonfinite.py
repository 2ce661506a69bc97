"""NaN and inf are refused when an episode is written (API and `flexrl data import`), before
anything is committed, unless explicitly allowed."""

from __future__ import annotations

import os
from pathlib import Path

import minari
import numpy as np
import pytest
from gymnasium import spaces
from minari.data_collector import EpisodeBuffer

from flexrl.errors import FlexrlError
from flexrl.store import ShardWriter, open_dataset

from .conftest import OBS_DIM, cli, random_episode, tree_digest, write_episodes


def arrays(rng: np.random.Generator, steps: int = 6) -> dict:
    return dict(
        observations=rng.normal(size=(steps + 1, OBS_DIM)).astype(np.float32),
        actions=rng.normal(size=(steps, 2)).astype(np.float32),
        rewards=rng.normal(size=steps).astype(np.float32),
        terminations=np.arange(steps) == steps - 1,
        truncations=np.zeros(steps, bool),
        infos={"speed": np.zeros(steps, np.float32)},
        task="walk",
        policy="ppo-1",
    )


CASES = [
    ("observations", (3, 1), np.nan, "observations holds nan at step 3"),
    ("observations", (6, 0), np.inf, "final_observation holds inf"),  # row T: the final one
    ("actions", (2, 1), -np.inf, "actions holds -inf at step 2"),
    ("rewards", (5,), np.nan, "rewards holds nan at step 5"),
]


@pytest.mark.parametrize(("key", "index", "value", "message"), CASES)
def test_nonfinite_is_refused_and_nothing_changes(
    ws: Path, rng, key: str, index: tuple, value: float, message: str
) -> None:
    write_episodes(ws, "walk", [random_episode(rng, seed=i) for i in range(3)])
    before = tree_digest(ws)
    bad = arrays(rng)
    bad[key][index] = value
    # Two good episodes are already written as shards when the third one is refused.
    writer = ShardWriter("walk", ws, shard_episodes=1, durable=False)
    with pytest.raises(FlexrlError) as caught, writer:
        writer.add_episode(**arrays(rng), seed=10)
        writer.add_episode(**arrays(rng), seed=11)
        writer.add_episode(**bad, seed=12)
    text = str(caught.value)
    assert "\n" not in text and message in text and "episode 2 (seed 12)" in text, text
    assert "--allow-nonfinite" in text and "nothing was stored" in text
    assert tree_digest(ws) == before
    assert open_dataset("walk", ws).version == 1


def test_nonfinite_is_stored_when_allowed(ws: Path, rng) -> None:
    episode = arrays(rng)
    episode["rewards"][1] = np.nan
    episode["observations"][2, 0] = np.inf
    with ShardWriter("walk", ws, durable=False, allow_nonfinite=True) as writer:
        writer.add_episode(**episode)
    back = open_dataset("walk", ws).episode(0)
    assert np.isnan(back.rewards[1]) and np.isinf(back.observations[2, 0])
    assert np.isnan(open_dataset("walk", ws).episode_returns[0])


# The fixture is data only (no env, no author): Minari's metadata reminders are noise here.
@pytest.mark.filterwarnings("ignore::UserWarning:minari.utils")
def test_import_refuses_nonfinite_unless_allowed(
    ws: Path, tmp_path: Path, rng, monkeypatch
) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    buffers = []
    for i in range(3):
        steps = 4
        rewards = rng.normal(size=steps)
        if i == 2:
            rewards[1] = np.nan
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=100 + i,
                observations=rng.normal(size=(steps + 1, 3)),
                actions=rng.uniform(-1, 1, size=(steps, 1)).astype(np.float32),
                rewards=rewards,
                terminations=np.arange(steps) == steps - 1,
                truncations=np.zeros(steps, bool),
            )
        )
    minari.create_dataset_from_buffers(
        "pend/nan-v0",
        buffers,
        observation_space=spaces.Box(-np.inf, np.inf, (3,), np.float64),
        action_space=spaces.Box(-1, 1, (1,), np.float32),
    )
    path = Path(os.environ["MINARI_DATASETS_PATH"]) / "pend/nan-v0"
    out = cli("data", "import", str(path), "--name", "pend", "--workspace", str(ws))
    assert out.code == 2 and out.stderr.count("\n") == 1, out
    assert out.stderr.startswith("error: pend, episode 2 (seed 102): rewards holds nan at step 1")
    assert [p for p in (ws / "datasets").rglob("*") if p.is_file()] == []  # nothing stored

    args = ("data", "import", str(path), "--name", "pend", "--allow-nonfinite")
    out = cli(*args, "--workspace", str(ws))
    assert out.code == 0, out.stderr
    assert np.isnan(open_dataset("pend", ws).episode(2).rewards[1])
