"""Minari interop with the real package: flexrl -> Minari -> flexrl, and Minari-written data."""

from __future__ import annotations

import os
from pathlib import Path

import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from flexrl.errors import FlexrlError
from flexrl.store import open_dataset
from flexrl.store.minari_io import import_minari

from .conftest import assert_same_episode, cli, cli_subprocess, random_episode, write_episodes


@pytest.fixture(autouse=True)
def _minari_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari-home"))


@pytest.mark.parametrize("data_format", ["hdf5", "arrow"])
def test_round_trip_flexrl_minari_flexrl(ws: Path, tmp_path: Path, rng, data_format: str) -> None:
    episodes = [
        random_episode(rng, seed=i if i % 3 else None, task=["walk", None][i % 2], goals=True)
        for i in range(7)
    ]
    episodes[2].instruction = "walk forward slowly"  # what the agent was told travels too
    write_episodes(ws, "walk", episodes, shard_episodes=3)
    out = tmp_path / "exported"
    result = cli(
        "data",
        "export",
        "walk@v1",
        "--format",
        "minari",
        "--out",
        str(out),
        "--backend",
        data_format,
        "--workspace",
        str(ws),
    )
    assert result.code == 0, result.stderr
    assert "the export has no env spec" in result.stdout  # written through the API: no env

    os.environ["MINARI_DATASETS_PATH"] = str(out)  # restored by monkeypatch
    loaded = minari.load_dataset("walk-v1")
    assert loaded.total_episodes == 7 and loaded.total_steps == sum(e.length for e in episodes)
    for original, theirs in zip(episodes, loaded.iterate_episodes(), strict=True):
        np.testing.assert_array_equal(theirs.observations, original.observations_t1())
        np.testing.assert_array_equal(theirs.actions, original.actions)
        np.testing.assert_array_equal(theirs.rewards, original.rewards)
        np.testing.assert_array_equal(theirs.terminations, original.terminations)
        np.testing.assert_array_equal(theirs.truncations, original.truncations)

    result = cli(
        "data", "import", str(out / "walk-v1"), "--name", "walk-back", "--workspace", str(ws)
    )
    assert result.code == 0, result.stderr
    back = open_dataset("walk-back", ws)
    source = open_dataset("walk@v1", ws)
    assert back.schema == source.schema
    for a, b in zip(source, back, strict=True):
        assert_same_episode(a, b)
    for name in [*source.schema.step_arrays(), "final_observations"]:
        x, y = source.array(name), back.array(name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name
    assert back.manifest.lineage.source == "minari:walk-v1"


@pytest.mark.parametrize(
    ("env_args", "env_id"),
    [
        (("--task", "walk_forward"), "flexrl/HumanoidWalk-v0"),
        (("--env-id", "InvertedPendulum-v5", "--float64"), "InvertedPendulum-v5"),
    ],
)
def test_export_of_a_collection_recovers_its_env(ws: Path, tmp_path: Path, env_args, env_id):
    args = ("--dataset", "c", "--episodes", "2", "--seed", "5", "--workspace", str(ws))
    collected = cli_subprocess("collect", "--policy", "random", *env_args, *args)
    assert collected.returncode == 0, collected.stderr
    out = tmp_path / "exported"
    result = cli("data", "export", "c", "--out", str(out), "--workspace", str(ws))
    assert result.code == 0 and "no env spec" not in result.stdout, result

    os.environ["MINARI_DATASETS_PATH"] = str(out)  # restored by monkeypatch
    loaded = minari.load_dataset("c-v1")
    env = loaded.recover_environment()
    # Both envs observe in float64: stored as float32 unless collected with --float64, and the
    # export's observation space says what the data holds.
    stored = np.float64 if "--float64" in env_args else np.float32
    try:
        assert env.spec.id == env_id
        assert loaded.observation_space.dtype == stored
        assert env.observation_space.shape == loaded.observation_space.shape
        assert env.action_space == loaded.action_space
        assert np.all(np.isfinite(loaded.action_space.low))  # the env's bounds, not (-inf, inf)
        # The rebuilt env is the one the data came from: same seed, same actions, same data.
        episode = next(loaded.iterate_episodes())
        assert episode.observations.dtype == stored and episode.rewards.dtype == stored
        obs, _ = env.reset(seed=5)
        np.testing.assert_array_equal(obs.astype(stored), episode.observations[0])
        obs, reward, *_ = env.step(episode.actions[0])
        np.testing.assert_array_equal(obs.astype(stored), episode.observations[1])
        assert stored(reward) == episode.rewards[0]
    finally:
        env.close()


@pytest.mark.parametrize("data_format", ["hdf5", "arrow"])
def test_import_what_minari_wrote(ws: Path, tmp_path: Path, rng, data_format: str) -> None:
    buffers = []
    for i in range(4):
        steps = 5 + i
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=100 + i,
                observations=rng.normal(size=(steps + 1, 4)),
                actions=rng.uniform(-3, 3, size=(steps, 1)).astype(np.float32),
                rewards=rng.normal(size=steps),
                terminations=np.arange(steps) == steps - 1,
                truncations=np.zeros(steps, bool),
                # 2-D: Minari 0.5's Arrow backend cannot read back its own 1-D info arrays
                infos={"x": np.arange(2 * steps + 2, dtype=np.float64).reshape(-1, 2)},
            )
        )
    # As a careful Minari user writes it: every metadata field set, so Minari warns of nothing.
    minari.create_dataset_from_buffers(
        "pend/native-v0",
        buffers,
        env="InvertedPendulum-v5",
        eval_env="InvertedPendulum-v5",
        algorithm_name="random",
        author="flexrl tests",
        author_email="tests@flexrl.invalid",
        code_permalink="https://example.invalid/flexrl",
        description="Random InvertedPendulum episodes, written by Minari itself.",
        data_format=data_format,
    )
    path = Path(os.environ["MINARI_DATASETS_PATH"]) / "pend/native-v0"
    manifest = import_minari(path, "native", ws)
    ds = open_dataset("native", ws)
    assert manifest.version == 1 and len(ds) == 4
    for buffer, episode in zip(buffers, ds, strict=True):
        np.testing.assert_array_equal(episode.observations_t1(), buffer.observations)
        np.testing.assert_array_equal(episode.actions, buffer.actions)
        np.testing.assert_array_equal(episode.rewards, buffer.rewards)
        np.testing.assert_array_equal(episode.infos["x"], buffer.infos["x"][1:])
        assert episode.seed == buffer.seed
    with pytest.raises(FlexrlError, match="already exists"):
        import_minari(path, "native", ws)

    # ... and back out: Minari -> flexrl -> Minari keeps the source's dtypes (float64
    # observations and rewards are not narrowed) and its bytes.
    out = tmp_path / "back"
    result = cli("data", "export", "native", "--out", str(out), "--workspace", str(ws))
    assert result.code == 0, result.stderr
    os.environ["MINARI_DATASETS_PATH"] = str(out)  # restored by monkeypatch
    back = minari.load_dataset("native-v1")
    assert back.observation_space == minari.load_dataset(str(path)).observation_space
    for buffer, theirs in zip(buffers, back.iterate_episodes(), strict=True):
        for name in ("observations", "actions", "rewards"):
            mine, again = getattr(buffer, name), getattr(theirs, name)
            assert mine.dtype == again.dtype and mine.tobytes() == again.tobytes(), name


def test_export_and_import_bad_input(ws: Path, tmp_path: Path, rng) -> None:
    write_episodes(ws, "walk", [random_episode(rng)])
    for args, message in [
        (["export", "nope", "--format", "minari", "--out", str(tmp_path / "o")], "unknown dataset"),
        (["export", "walk", "--format", "csv", "--out", str(tmp_path / "o")], "format"),
        (["export", "walk", "--format", "minari"], "give --out DIR or --dataset-id"),
        (["export", "walk", "--format", "minari", "--dataset-id", "bad id"], "invalid Minari"),
        (["import", str(tmp_path), "--name", "x"], "not a Minari dataset"),
        (["import", str(tmp_path), "--name", "../x"], "invalid dataset name"),
    ]:
        result = cli("data", *args, "--workspace", str(ws))
        assert result.code == 2, (args, result)
        assert message in result.stderr, (args, result.stderr)
    out = tmp_path / "o2"
    assert (
        cli(
            "data",
            "export",
            "walk",
            "--format",
            "minari",
            "--out",
            str(out),
            "--workspace",
            str(ws),
        ).code
        == 0
    )
    again = cli(
        "data", "export", "walk", "--format", "minari", "--out", str(out), "--workspace", str(ws)
    )
    assert again.code == 2 and "already exists" in again.stderr
