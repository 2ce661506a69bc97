"""Samplers against a slow, obviously-correct reference built from whole episodes."""

from __future__ import annotations

import numpy as np
import pytest

from flexrl.errors import FlexrlError
from flexrl.store import open_dataset
from flexrl.store.sampling import ChunkCache, TransitionSampler, WindowSampler

from .conftest import random_episode, write_episodes


@pytest.fixture
def dataset(ws, rng):
    lengths = [1, 2, 5, 17, 40, 3, 33, 8, 1, 25]
    episodes = [random_episode(rng, n, goals=True) for n in lengths]
    # tiny chunks, many shards: windows cross chunk and shard boundaries
    write_episodes(ws, "walk", episodes, shard_episodes=3, chunk_bytes=64)
    return open_dataset("walk", ws), episodes


def reference_window(episode, end: int, window: int, scale: float) -> dict:
    """Loop version: window of `window` steps ending at step `end` of the episode, left-padded."""
    out = {
        "observations": np.zeros((window, *episode.observations.shape[1:]), np.float32),
        "actions": np.zeros((window, *episode.actions.shape[1:]), np.float32),
        "rewards": np.zeros(window, np.float32),
        "goals": np.zeros((window, *episode.goals.shape[1:]), np.float64),
        "returns_to_go": np.zeros(window, np.float32),
        "timesteps": np.zeros(window, np.int64),
        "mask": np.zeros(window, bool),
    }
    for k in range(window):
        t = end - (window - 1) + k
        if t < 0:
            continue
        out["observations"][k] = episode.observations[t]
        out["actions"][k] = episode.actions[t]
        out["rewards"][k] = episode.rewards[t]
        out["goals"][k] = episode.goals[t]
        out["returns_to_go"][k] = sum(float(r) for r in episode.rewards[t:]) / scale
        out["timesteps"][k] = t
        out["mask"][k] = True
    return out


@pytest.mark.parametrize("cache_bytes", [1 << 30, 2000])  # dense buffer, and a tiny LRU
def test_windows_match_reference(dataset, cache_bytes: int) -> None:
    ds, episodes = dataset
    sampler = WindowSampler(ds, 6, rtg_scale=10.0, seed=0, cache_bytes=cache_bytes)
    pairs = [
        (e, ds.episode_starts[e] + t)
        for e in range(len(episodes))
        for t in range(episodes[e].length)
    ]
    eps = np.array([p[0] for p in pairs])
    ends = np.array([p[1] for p in pairs])
    batch = sampler.windows(eps, ends)
    for b, (e, end) in enumerate(pairs):
        ref = reference_window(episodes[e], int(end - ds.episode_starts[e]), 6, 10.0)
        for key, value in ref.items():
            got = getattr(batch, key)[b]
            if key == "returns_to_go":
                np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-5, err_msg=key)
            else:
                np.testing.assert_array_equal(got, value, err_msg=f"{key} episode {e} end {end}")
    if cache_bytes < 10_000:
        assert sampler.cache.nbytes <= cache_bytes + 4096  # bounded (one chunk of slack)


def test_random_windows_deterministic_and_weighted_by_length(dataset) -> None:
    ds, episodes = dataset
    a = WindowSampler(ds, 4, seed=7).sample(64)
    b = WindowSampler(ds, 4, seed=7, cache_bytes=1000).sample(64)
    for key in ("observations", "actions", "returns_to_go", "timesteps", "mask", "episodes"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(WindowSampler(ds, 4, seed=8).sample(64).episodes, a.episodes)
    counts = np.bincount(
        WindowSampler(ds, 4, seed=1).sample(20000).episodes, minlength=len(episodes)
    )
    expected = ds.episode_lengths / ds.num_steps * 20000
    np.testing.assert_allclose(counts, expected, rtol=0.2, atol=40)
    uniform = np.bincount(WindowSampler(ds, 4, seed=1, weighting="episode").sample(20000).episodes)
    np.testing.assert_allclose(uniform, 2000, rtol=0.15)
    # padding is exactly where the window reaches before the episode start
    batch = WindowSampler(ds, 8, seed=3).sample(256)
    assert (batch.mask == (np.arange(8)[None] >= 7 - batch.timesteps[:, -1:])).all()
    assert (batch.observations[~batch.mask] == 0).all()


@pytest.mark.parametrize("cache_bytes", [1 << 30, 500])
def test_transitions_match_reference(dataset, cache_bytes: int) -> None:
    ds, episodes = dataset
    sampler = TransitionSampler(ds, seed=0, cache_bytes=cache_bytes)
    eps = np.repeat(np.arange(len(episodes)), ds.episode_lengths)
    steps = np.arange(ds.num_steps)
    batch = sampler.transitions(eps, steps)
    i = 0
    for episode in episodes:
        t1 = episode.observations_t1()
        for t in range(episode.length):
            np.testing.assert_array_equal(batch.observations[i], t1[t])
            np.testing.assert_array_equal(batch.next_observations[i], t1[t + 1])
            np.testing.assert_array_equal(batch.actions[i], episode.actions[t])
            assert batch.rewards[i] == episode.rewards[t]
            assert batch.terminations[i] == episode.terminations[t]
            assert batch.truncations[i] == episode.truncations[t]
            i += 1
    random = TransitionSampler(ds, seed=5).sample(32)
    again = TransitionSampler(ds, seed=5).sample(32)
    np.testing.assert_array_equal(random.next_observations, again.next_observations)


def test_chunk_cache_reads_each_chunk_once_when_it_fits(dataset) -> None:
    ds, _ = dataset
    cache = ChunkCache(ds)
    rows = np.arange(ds.num_steps)
    np.testing.assert_array_equal(cache.gather("observations", rows), ds.array("observations"))
    reads = cache.chunk_reads
    cache.gather("observations", rows[::-1])
    assert cache.chunk_reads == reads
    with pytest.raises(IndexError):
        cache.gather("observations", np.array([ds.num_steps]))


def test_sampler_bad_arguments(dataset) -> None:
    ds, _ = dataset
    with pytest.raises(FlexrlError):
        WindowSampler(ds, 0)
    with pytest.raises(FlexrlError):
        WindowSampler(ds, 4, rtg_scale=0)
    with pytest.raises(FlexrlError):
        TransitionSampler(ds, weighting="nope")  # type: ignore[arg-type]
