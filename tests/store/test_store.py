"""Writing and reading datasets: round trips, versions, references, statistics, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from flexrl.errors import FlexrlError
from flexrl.store import ShardWriter, make_episode, open_dataset, resolve
from flexrl.store.format import parse_ref

from .conftest import assert_same_episode, random_episode, write_episodes


def test_store_never_imports_torch() -> None:
    code = (
        "import sys, flexrl.store, flexrl.store.sampling, flexrl.store.minari_io; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "ref", ["", "../x", "A B", "Walk", "a/b", "-x", "x@", "x@v0", "x@a@b", "x" * 65]
)
def test_bad_references_are_refused(ref: str) -> None:
    with pytest.raises(FlexrlError):
        parse_ref(ref)


def test_references_parse() -> None:
    assert parse_ref("walk").version is None
    assert parse_ref("walk@v12").version == 12
    assert parse_ref("walk@best").tag == "best"


def test_round_trip_many_shards(ws, rng) -> None:
    episodes = [
        random_episode(rng, seed=i, task=["walk", "turn", None][i % 3], goals=True)
        for i in range(23)
    ]
    write_episodes(ws, "walk", episodes, shard_episodes=5)
    ds = open_dataset("walk", ws)
    assert (ds.version, len(ds), len(ds.manifest.shards)) == (1, 23, 5)
    assert ds.num_steps == sum(e.length for e in episodes)
    for i in (0, 4, 5, 22, -1):
        assert_same_episode(episodes[i], ds.episode(i))
    for original, read in zip(episodes, ds, strict=True):
        assert_same_episode(original, read)
    np.testing.assert_array_equal(
        ds.array("rewards"), np.concatenate([e.rewards for e in episodes])
    )
    np.testing.assert_array_equal(
        ds.array("infos/speed"), np.concatenate([e.infos["speed"] for e in episodes])
    )
    np.testing.assert_array_equal(ds.array("goals"), np.concatenate([e.goals for e in episodes]))
    with pytest.raises(FlexrlError, match="no episode 23"):
        ds.episode(23)
    with pytest.raises(FlexrlError, match="no array"):
        ds.array("nope")


def test_instructions_are_kept_per_episode(ws, rng) -> None:
    """What each episode's agent was told: kept per episode (None where nothing was said), in
    shards that have some and beside shards that have none (as every older shard)."""
    from dataclasses import replace

    told = [replace(random_episode(rng), instruction=t) for t in ("walk forward", None, "stop")]
    untold = [random_episode(rng) for _ in range(2)]
    write_episodes(ws, "said", untold + told, shard_episodes=2)  # shards: none / some / some
    ds = open_dataset("said", ws)
    assert ds.episode_instructions.tolist() == [None, None, "walk forward", None, "stop"]
    for original, read in zip(untold + told, ds, strict=True):
        assert_same_episode(original, read)
    with pytest.raises(FlexrlError, match="instruction must be text"):
        make_episode(np.zeros((2, 1)), np.zeros((1, 1)), [0.0], [False], [True], instruction=3)


def test_summary_statistics_match_numpy(ws, rng) -> None:
    episodes = [random_episode(rng, task=["walk", "turn"][i % 2]) for i in range(17)]
    write_episodes(ws, "walk", episodes, shard_episodes=4)
    stats = open_dataset("walk", ws).stats()
    returns = np.array([np.sum(e.rewards, dtype=np.float64) for e in episodes])
    assert stats.episodes == 17 and stats.steps == sum(e.length for e in episodes)
    assert stats.returns.mean == pytest.approx(returns.mean())
    assert stats.returns.std == pytest.approx(returns.std())
    assert stats.lengths.max == max(e.length for e in episodes)
    assert stats.terminated == sum(bool(e.terminations[-1]) for e in episodes)
    walk = next(t for t in stats.per_task if t.task == "walk")
    assert walk.episodes == 9 and walk.returns.mean == pytest.approx(returns[::2].mean())
    obs = np.concatenate([e.observations for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats.obs_mean, obs.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.obs_std, obs.std(0), rtol=1e-6)
    act = np.concatenate([e.actions for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats.action_std, act.std(0), rtol=1e-6)


def test_old_version_reads_identically_after_later_commits(ws, rng) -> None:
    write_episodes(ws, "walk", [random_episode(rng) for _ in range(6)], shard_episodes=4)
    v1 = open_dataset("walk@v1", ws)
    before = [v1.episode(i) for i in range(len(v1))]
    before_obs = v1.array("observations")
    digest = resolve("walk@v1", ws).digest
    for _ in range(4):  # v2..v5
        write_episodes(ws, "walk", [random_episode(rng) for _ in range(3)])
    assert resolve("walk", ws).version == 5
    again = open_dataset("walk@v1", ws)
    assert again.digest == digest and len(again) == 6
    np.testing.assert_array_equal(again.array("observations"), before_obs)
    for a, b in zip(before, again, strict=True):
        assert_same_episode(a, b)
    latest = open_dataset("walk", ws)
    assert len(latest) == 18
    assert_same_episode(latest.episode(5), before[5])  # later versions extend, never reorder


def test_t_plus_one_and_final_observation_forms_agree(ws, rng) -> None:
    obs = rng.normal(size=(6, 4)).astype(np.float32)
    kw = dict(
        actions=np.zeros((5, 2), np.float32),
        rewards=np.ones(5, np.float32),
        terminations=np.zeros(5, bool),
        truncations=np.zeros(5, bool),
    )
    a = make_episode(obs, **kw)
    b = make_episode(obs[:-1], final_observation=obs[-1], **kw)
    assert_same_episode(a, b)
    np.testing.assert_array_equal(a.observations_t1(), obs)


def test_schema_mismatch_and_empty_episode_change_nothing(ws, rng) -> None:
    write_episodes(ws, "walk", [random_episode(rng) for _ in range(3)])
    digest = resolve("walk", ws).digest
    writer = ShardWriter("walk", ws, durable=False)
    good = random_episode(rng)
    with pytest.raises(FlexrlError, match="observations is float64"):
        writer.add_episode(
            good.observations_t1().astype(np.float64),
            good.actions,
            good.rewards,
            good.terminations,
            good.truncations,
            infos=good.infos,
        )
    with pytest.raises(FlexrlError, match="actions is float32\\[3\\]"):
        writer.add_episode(
            good.observations_t1(),
            np.zeros((good.length, 3), np.float32),
            good.rewards,
            good.terminations,
            good.truncations,
            infos=good.infos,
        )
    with pytest.raises(FlexrlError, match="infos/speed is missing"):
        writer.add_episode(
            good.observations_t1(), good.actions, good.rewards, good.terminations, good.truncations
        )
    with pytest.raises(FlexrlError, match="at least one step"):
        writer.add_episode(
            np.zeros((1, 4), np.float32),
            np.zeros((0, 2), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, bool),
            np.zeros(0, bool),
        )
    with pytest.raises(FlexrlError, match="rows for"):
        writer.add_episode(
            good.observations,
            good.actions,
            good.rewards,
            good.terminations,
            good.truncations,
            infos=good.infos,
        )
    with pytest.raises(FlexrlError, match="booleans"):
        writer.add_episode(
            good.observations_t1(),
            good.actions,
            good.rewards,
            np.full(good.length, 2),
            good.truncations,
            infos=good.infos,
        )
    assert writer.commit() is None
    assert resolve("walk", ws).digest == digest and resolve("walk", ws).version == 1


def test_concurrent_first_commits_with_different_schemas(ws, rng) -> None:
    """The second writer finds the dataset's schema at commit time, not only at open."""
    a = ShardWriter("walk", ws, durable=False)
    b = ShardWriter("walk", ws, durable=False)
    a.add(random_episode(rng))
    b.add_episode(
        np.zeros((3, 7), np.float32),
        np.zeros((2, 2), np.float32),
        np.zeros(2, np.float32),
        np.zeros(2, bool),
        np.zeros(2, bool),
    )
    a.commit()
    with pytest.raises(FlexrlError, match="cannot commit"):
        b.commit()
    b.abort()
    assert len(open_dataset("walk", ws)) == 1


def test_writer_exception_discards_pending_shards(ws, rng) -> None:
    with pytest.raises(RuntimeError), ShardWriter("walk", ws, shard_episodes=1, durable=False) as w:
        w.add(random_episode(rng))
        w.add(random_episode(rng))
        raise RuntimeError("boom")
    assert list((ws / "datasets/walk/shards").iterdir()) == []
    with pytest.raises(FlexrlError, match="no committed version"):
        open_dataset("walk", ws)


def test_unknown_things_are_clear_errors(ws, rng) -> None:
    with pytest.raises(FlexrlError, match="unknown dataset 'nope'"):
        open_dataset("nope", ws)
    write_episodes(ws, "walk", [random_episode(rng)])
    with pytest.raises(FlexrlError, match=r"unknown version walk@v9 \(latest is v1\)"):
        open_dataset("walk@v9", ws)
    with pytest.raises(FlexrlError, match="unknown tag walk@best"):
        open_dataset("walk@best", ws)


def test_corrupt_manifest_leaves_other_versions_readable(ws, rng) -> None:
    write_episodes(ws, "walk", [random_episode(rng)])
    write_episodes(ws, "walk", [random_episode(rng)])
    (ws / "datasets/walk/versions/v000002.json").write_text("{not json")
    with pytest.raises(FlexrlError, match="walk@v2: manifest is not valid JSON"):
        open_dataset("walk", ws)
    assert len(open_dataset("walk@v1", ws)) == 1
    with pytest.raises(FlexrlError, match="not valid JSON"):  # cannot build on a broken parent
        write_episodes(ws, "walk", [random_episode(rng)])
    assert len(open_dataset("walk@v1", ws)) == 1
