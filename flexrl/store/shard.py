"""One shard: an immutable Zarr v3 group holding many episodes (writing and reading it)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from flexrl.errors import FlexrlError
from flexrl.store.format import (
    EPISODE_ARRAYS,
    NO_SEED,
    Lineage,
    Schema,
    ShardEntry,
    utc_now,
)
from flexrl.store.zstore import CorruptShardError, DigestingStore, VerifyingStore

COMPRESSIONS = ("lz4", "zstd", "none")
DEFAULT_CHUNK_BYTES = 1 << 20  # ~1 MiB uncompressed per chunk: small random reads stay cheap
MAX_CHUNK_STEPS = 1 << 20


@dataclass
class Episode:
    """One episode as the store hands it out. `observations[t]` is seen before `actions[t]`;
    `final_observation` is the one after the last step (Minari's observations[T])."""

    observations: np.ndarray
    final_observation: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    goals: np.ndarray | None = None
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int | None = None
    task: str | None = None
    policy: str | None = None
    index: int = -1  # position in the dataset version it was read from

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards, dtype=np.float64))

    def observations_t1(self) -> np.ndarray:
        """T+1 observations, the last being the final observation (Minari's convention)."""
        return np.concatenate([self.observations, self.final_observation[None]], axis=0)

    def step_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "observations": self.observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "terminations": self.terminations,
            "truncations": self.truncations,
        }
        if self.goals is not None:
            arrays["goals"] = self.goals
        for key, value in self.infos.items():
            arrays["infos/" + key] = value
        return arrays


def _codec(compression: str, itemsize: int) -> list[BloscCodec]:
    if compression == "none":
        return []
    # Blosc with byte shuffle: fast enough to beat uncompressed HDF5 writes, and float
    # observations with many exact zeros (Humanoid's contact forces) shrink several times.
    cname, level = ("lz4", 5) if compression == "lz4" else ("zstd", 3)
    return [BloscCodec(cname=cname, clevel=level, shuffle="shuffle", typesize=max(1, itemsize))]


def _chunk_steps(step_bytes: int, steps: int, chunk_bytes: int) -> int:
    target = max(1, chunk_bytes // max(1, step_bytes))
    pow2 = 1 << (target.bit_length() - 1)
    return max(1, min(pow2, MAX_CHUNK_STEPS, steps))


def _stats(values: np.ndarray) -> dict[str, Any]:
    """count, mean and sum of squared deviations (m2) per feature, merged later (Chan et al.).

    Deviations are taken in the data's own precision (no float64 copy of a 64 MiB shard) and
    summed in float64: exact to ~1e-7 relative, plenty for normalisation constants.
    """
    flat = values.reshape(len(values), -1)
    if not np.issubdtype(flat.dtype, np.floating):
        flat = flat.astype(np.float64)
    mean = flat.mean(axis=0, dtype=np.float64)
    dev = flat - mean.astype(flat.dtype)
    np.square(dev, out=dev)
    m2 = dev.sum(axis=0, dtype=np.float64)
    return {"count": len(flat), "mean": mean.tolist(), "m2": m2.tolist()}


def write_shard(
    directory: Path,
    shard_id: str,
    episodes: Sequence[Episode],
    schema: Schema,
    lineage: Lineage,
    compression: str = "lz4",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    durable: bool = True,
) -> ShardEntry:
    """Write `episodes` as a new Zarr v3 group at `directory` and describe it for a manifest."""
    if compression not in COMPRESSIONS:
        raise FlexrlError(
            f"unknown compression {compression!r}: use one of {', '.join(COMPRESSIONS)}"
        )
    lengths = np.array([e.length for e in episodes], dtype=np.int64)
    offsets = np.zeros(len(episodes) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    steps = int(offsets[-1])
    tasks = sorted({e.task for e in episodes if e.task is not None})
    policies = sorted({e.policy for e in episodes if e.policy is not None})

    data: dict[str, np.ndarray] = {}
    for name, spec in schema.step_arrays().items():
        parts = [e.step_arrays()[name] for e in episodes]
        data[name] = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        assert data[name].dtype.str == spec.dtype
    per_episode: dict[str, np.ndarray] = {
        "episode_offsets": offsets,
        "final_observations": np.stack([e.final_observation for e in episodes]),
        "episode_seed": np.array(
            [NO_SEED if e.seed is None else e.seed for e in episodes], dtype=np.int64
        ),
        "episode_return": np.array([e.episode_return for e in episodes], dtype=np.float64),
        "episode_task": np.array(
            [-1 if e.task is None else tasks.index(e.task) for e in episodes], dtype=np.int32
        ),
        "episode_policy": np.array(
            [-1 if e.policy is None else policies.index(e.policy) for e in episodes],
            dtype=np.int32,
        ),
    }
    assert set(per_episode) == set(EPISODE_ARRAYS)
    attrs = {
        "flexrl": {
            "format_version": 1,
            "episodes": len(episodes),
            "steps": steps,
            "tasks": tasks,
            "policies": policies,
            "stats": {k: _stats(data[k]) for k in ("observations", "actions")},
        }
    }
    store = DigestingStore(directory)
    group = zarr.open_group(store, mode="w-", zarr_format=3, attributes=attrs)
    arrays: dict[str, dict[str, Any]] = {}
    for name, values in {**data, **per_episode}.items():
        row_bytes = max(1, values[0].nbytes) if len(values) else 1
        chunk = _chunk_steps(row_bytes, len(values), chunk_bytes)
        group.create_array(
            name,
            data=values,
            chunks=(chunk, *values.shape[1:]),
            compressors=_codec(compression, values.dtype.itemsize),
            fill_value=0,
            config={"write_empty_chunks": True},  # every chunk exists: a missing one is damage
        )
    store.finish()
    for key, raw in store.metadata.items():
        name = key[: -len("/zarr.json")] if "/" in key else ""
        meta = json.loads(raw)
        if name and meta.get("node_type") == "array":
            arrays[name] = {
                "shape": meta["shape"],
                "dtype": meta["data_type"],
                "chunks": meta["chunk_grid"]["configuration"]["chunk_shape"],
                "codecs": meta["codecs"],
            }
    nbytes = 0
    for key in store.digests:
        path = directory / key
        nbytes += path.stat().st_size
        if durable:
            _fsync(path)
    if durable:
        for sub in {(directory / k).parent for k in store.digests}:
            _fsync(sub)
    return ShardEntry(
        id=shard_id,
        episodes=len(episodes),
        steps=steps,
        nbytes=nbytes,
        created_at=utc_now(),
        lineage=lineage,
        arrays=dict(sorted(arrays.items())),
        files=dict(sorted(store.digests.items())),
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardReader:
    """Read access to one committed shard; every byte read from disk is digest-checked."""

    def __init__(self, directory: Path, entry: ShardEntry, dataset: str):
        self.directory = directory
        self.entry = entry
        self.label = f"{dataset}/{entry.id}"
        if not directory.is_dir():
            raise CorruptShardError(f"shard {self.label} is missing from {directory.parent}")
        self.store = VerifyingStore(directory, entry.files, self.label)
        try:
            self.group = zarr.open_group(
                self.store, mode="r", zarr_format=3, use_consolidated=False
            )
        except FlexrlError:
            raise
        except Exception as e:
            raise CorruptShardError(f"shard {self.label} cannot be opened: {e}") from None
        meta = self.group.attrs.get("flexrl", {})
        self.tasks: list[str] = list(meta.get("tasks", []))
        self.policies: list[str] = list(meta.get("policies", []))
        self.stats: dict[str, Any] = meta.get("stats", {})
        self._arrays: dict[str, zarr.Array] = {}
        self._episode_table: dict[str, np.ndarray] | None = None

    def array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            if name not in self.entry.arrays:
                raise FlexrlError(f"shard {self.label} has no array {name!r}")
            try:
                self._arrays[name] = self.group[name]  # type: ignore[assignment]
            except FlexrlError:
                raise
            except Exception as e:
                raise CorruptShardError(
                    f"shard {self.label}: array {name!r} unreadable: {e}"
                ) from None
        return self._arrays[name]

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        try:
            values = self.array(name)[start:stop]
        except FlexrlError:
            raise
        except Exception as e:
            raise CorruptShardError(f"shard {self.label}: array {name!r} unreadable: {e}") from None
        return np.asarray(values)

    def chunk_steps(self, name: str) -> int:
        return int(self.entry.arrays[name]["chunks"][0])

    def episode_table(self) -> dict[str, np.ndarray]:
        """The small per-episode arrays (offsets, seeds, returns, task and policy indices)."""
        if self._episode_table is None:
            table = {k: self.read(k) for k in EPISODE_ARRAYS if k != "final_observations"}
            offsets = table["episode_offsets"]
            if len(offsets) != self.entry.episodes + 1 or offsets[-1] != self.entry.steps:
                raise CorruptShardError(
                    f"shard {self.label}: episode index disagrees with the manifest's counts"
                )
            self._episode_table = table
        return self._episode_table
