"""The direct chunk writer/reader (chunkio) against zarr-python itself.

flexrl writes and reads shards without going through zarr-python (for speed), so these tests pin
that a shard is still an ordinary Zarr v3 group: plain `zarr.open_group` reads every array, and
every file is byte for byte what zarr-python writes for the same arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from flexrl.store import CorruptShardError, open_dataset
from flexrl.store.format import digest_bytes
from flexrl.store.sampling import TransitionSampler, WindowSampler
from flexrl.store.zstore import array_of

from .conftest import random_episode, write_episodes


@pytest.fixture
def shard_ws(ws: Path, rng) -> Path:
    episodes = [random_episode(rng, n, goals=True, seed=i) for i, n in enumerate([7, 30, 1, 64, 9])]
    # small chunks: several chunks per array, a padded edge chunk, chunks spanning episodes
    write_episodes(ws, "walk", episodes, chunk_bytes=256)
    write_episodes(
        ws, "walk", [random_episode(rng, 50, goals=True)], compression="zstd", chunk_bytes=512
    )
    write_episodes(ws, "walk", [random_episode(rng, 12, goals=True)], compression="none")
    return ws


def _shard_dirs(ws: Path) -> list[tuple[Path, dict]]:
    ds = open_dataset("walk", ws)
    return [(ws / "datasets/walk/shards" / s.id, s.arrays) for s in ds.manifest.shards]


def test_plain_zarr_reads_every_array(shard_ws: Path) -> None:
    ds = open_dataset("walk", shard_ws)
    for s, (directory, arrays) in enumerate(_shard_dirs(shard_ws)):
        group = zarr.open_group(directory, mode="r", zarr_format=3)
        assert group.attrs["flexrl"]["episodes"] == ds.manifest.shards[s].episodes
        for name in arrays:
            np.testing.assert_array_equal(group[name][:], ds.shard(s).read(name), err_msg=name)
            # partial reads across chunk boundaries agree too
            rows = group[name].shape[0]
            lo, hi = rows // 3, max(rows // 3 + 1, rows - 2)
            np.testing.assert_array_equal(group[name][lo:hi], ds.shard(s).read(name, lo, hi))


def test_files_are_what_zarr_python_writes(shard_ws: Path, tmp_path: Path) -> None:
    for i, (directory, arrays) in enumerate(_shard_dirs(shard_ws)):
        ours = zarr.open_group(directory, mode="r", zarr_format=3)
        ref_dir = tmp_path / f"ref{i}"
        ref = zarr.open_group(ref_dir, mode="w-", zarr_format=3, attributes=dict(ours.attrs))
        for name, spec in arrays.items():
            ref.create_array(
                name,
                data=ours[name][:],
                chunks=tuple(spec["chunks"]),
                compressors=[zarr.codecs.BloscCodec.from_dict(c) for c in spec["codecs"][1:]],
                fill_value=0,
                chunk_key_encoding={"name": "default", "separator": "."},
                config={"write_empty_chunks": True},
            )
        mine = {p.relative_to(directory): p for p in directory.rglob("*") if p.is_file()}
        theirs = {p.relative_to(ref_dir): p for p in ref_dir.rglob("*") if p.is_file()}
        assert sorted(mine) == sorted(theirs)
        for key, path in mine.items():  # chunks and zarr.json alike, byte for byte
            assert path.read_bytes() == theirs[key].read_bytes(), key


def test_chunk_keys_name_their_array() -> None:
    assert array_of("observations/c.3.0") == "observations"
    assert array_of("infos/speed/c.0") == "infos/speed"
    assert array_of("observations/c/3/0") == "observations"  # zarr's "/" separator
    assert array_of("infos/zarr.json") == "infos"


@pytest.mark.parametrize("preload", [True, False])
def test_cached_sampler_verifies_what_it_loads(shard_ws: Path, preload: bool) -> None:
    directory, _ = _shard_dirs(shard_ws)[0]
    chunk = directory / "observations/c.0.0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    ds = open_dataset("walk", shard_ws)
    with pytest.raises(CorruptShardError, match="observations"):
        sampler = WindowSampler(ds, 4, seed=0)
        if preload:
            sampler.preload()
        for _ in range(50):  # every chunk is needed sooner or later
            sampler.sample(32)


def test_preload_serves_everything_from_memory(shard_ws: Path) -> None:
    ds = open_dataset("walk", shard_ws)
    windows = WindowSampler(ds, 8, seed=3)
    assert windows.preload()
    reads = windows.cache.chunk_reads
    lazy = WindowSampler(ds, 8, seed=3)
    for _ in range(5):
        a, b = windows.sample(16), lazy.sample(16)
        for key in ("observations", "actions", "rewards", "returns_to_go", "mask", "goals"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    assert windows.cache.chunk_reads == reads
    transitions = TransitionSampler(ds, seed=1)
    assert transitions.preload()
    assert TransitionSampler(ds, seed=1, cache_bytes=100).preload() is False


def test_dtypes_outside_the_direct_path_go_through_zarr(ws: Path, rng) -> None:
    episode = random_episode(rng, 20)
    episode.observations = episode.observations.astype(np.complex64)
    episode.final_observation = episode.final_observation.astype(np.complex64)
    write_episodes(ws, "cplx", [episode])
    ds = open_dataset("cplx", ws)
    np.testing.assert_array_equal(ds.episode(0).observations, episode.observations)
    np.testing.assert_array_equal(ds.array("final_observations")[0], episode.final_observation)


def test_manifest_bytes_are_its_json(shard_ws: Path) -> None:
    ds = open_dataset("walk", shard_ws)
    raw = (shard_ws / "datasets/walk/versions" / "v000003.json").read_bytes()
    obj = json.loads(raw)
    assert obj.pop("manifest_digest") == digest_bytes(raw[: raw.rindex(b",\n")] + b"\n}\n")
    assert obj == ds.manifest.to_json()
    assert raw == ds.manifest.to_bytes()
    # v3 is a delta (format 3): its file lists, one line each, only the shards it added
    assert not obj["checkpoint"] and obj["shard_count"] == len(ds.manifest.shards)
    assert [s["id"] for s in obj["shards"]] == obj["commit"]["added_shards"]
    assert raw.count(b'\n  {"id": ') == len(ds.manifest.own) < len(ds.manifest.shards)


def test_shards_with_slash_chunk_keys_still_read(ws: Path, rng, monkeypatch) -> None:
    """Shards written before the '.' separator (zarr's 'c/<i>/0' keys) read and verify."""
    from flexrl.store import chunkio, verify

    episodes = [random_episode(rng, n, goals=True) for n in (30, 5, 41)]
    with monkeypatch.context() as m:  # the zarr-python path, with the old separator
        m.setattr(chunkio, "SEPARATOR", "/")
        m.setattr(chunkio, "fast_dtype", lambda dtype: False)
        write_episodes(ws, "old", episodes, chunk_bytes=256)
    ds = open_dataset("old", ws)
    assert "observations/c/0/0" in ds.manifest.shards[0].files
    for i, episode in enumerate(episodes):
        np.testing.assert_array_equal(ds.episode(i).observations, episode.observations)
    sampler = WindowSampler(ds, 6, seed=0)
    assert sampler.preload()
    sampler.sample(16)
    assert verify("old", ws).ok
