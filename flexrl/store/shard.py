"""One shard: an immutable Zarr v3 group holding many episodes (writing and reading it)."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from flexrl.errors import FlexrlError
from flexrl.store import chunkio
from flexrl.store.backend import SHARD_ROOT, Backend, NotFound, ShardUpload
from flexrl.store.episode import Episode
from flexrl.store.format import (
    EPISODE_ARRAYS,
    NO_SEED,
    Lineage,
    Schema,
    ShardEntry,
    digest_bytes,
    utc_now,
)
from flexrl.store.objcache import object_cache
from flexrl.store.zstore import CorruptShardError, DigestingStore, VerifyingStore, check_object

COMPRESSIONS = ("lz4", "zstd", "none")
DEFAULT_CHUNK_BYTES = 1 << 20  # ~1 MiB uncompressed per chunk: small random reads stay cheap
MAX_CHUNK_STEPS = 1 << 20


def _codec(compression: str, itemsize: int) -> list[BloscCodec]:
    """The compressor zarr-python is given on the fallback path (same as chunkio.blosc_json)."""
    return [BloscCodec.from_dict(c) for c in chunkio.blosc_json(compression, itemsize)]


def _chunk_steps(step_bytes: int, steps: int, chunk_bytes: int) -> int:
    target = max(1, chunk_bytes // max(1, step_bytes))
    pow2 = 1 << (target.bit_length() - 1)
    return max(1, min(pow2, MAX_CHUNK_STEPS, steps))


def _stats(values: np.ndarray) -> dict[str, Any]:
    """count, mean and sum of squared deviations (m2) per feature of one chunk; chunks and
    shards are merged exactly in float64 (Chan et al.).

    Sums accumulate in float64; the deviations are taken in the data's own precision (no float64
    copy). A chunk is about `chunk_bytes`, so both passes run over data in cache.
    """
    flat = values.reshape(len(values), -1)
    if np.iscomplexobj(flat):
        flat = flat.real  # statistics of the real part (as numpy's float cast would give)
    if not np.issubdtype(flat.dtype, np.floating):
        flat = flat.astype(np.float64)
    mean = flat.sum(axis=0, dtype=np.float64) / len(flat)
    with np.errstate(invalid="ignore"):  # data stored with allow_nonfinite: NaN statistics
        dev = flat - mean.astype(flat.dtype)
    np.square(dev, out=dev)
    m2 = dev.sum(axis=0, dtype=np.float64)
    return {"count": len(flat), "mean": mean, "m2": m2}


def _merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Chan et al.'s exact merge of per-chunk (count, mean, m2), in chunk order."""
    n, mean, m2 = 0, None, None
    for part in parts:
        nb, mb, m2b = part["count"], part["mean"], part["m2"]
        if mean is None:
            n, mean, m2 = nb, mb.copy(), m2b.copy()
            continue
        delta = mb - mean
        total = n + nb
        mean += delta * (nb / total)
        m2 += m2b + delta**2 * (n * nb / total)
        n = total
    assert mean is not None and m2 is not None
    return {"count": n, "mean": mean.tolist(), "m2": m2.tolist()}


@dataclass
class _Plan:
    """One array to write: its rows come from `parts` (one per episode, or a single array)."""

    name: str
    parts: list[np.ndarray]
    part_starts: np.ndarray  # first row of each part, plus the total
    chunk: int
    codec: chunkio.ChunkCodec
    stats: bool

    @property
    def rows(self) -> int:
        return int(self.part_starts[-1])

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.parts[0].shape[1:]

    @property
    def dtype(self) -> np.dtype:
        return self.parts[0].dtype

    def take(self, a: int, b: int) -> np.ndarray:
        """Rows [a, b): a view when one part holds them all, else one copy."""
        first = int(np.searchsorted(self.part_starts, a, side="right")) - 1
        last = int(np.searchsorted(self.part_starts, b, side="left")) - 1
        base = int(self.part_starts[first])
        if first == last:
            return self.parts[first][a - base : b - base]
        out = np.empty((b - a, *self.row_shape), dtype=self.dtype)
        pos = a
        for p in range(first, last + 1):
            lo, hi = max(a, int(self.part_starts[p])), min(b, int(self.part_starts[p + 1]))
            start = int(self.part_starts[p])
            out[lo - a : hi - a] = self.parts[p][lo - start : hi - start]
            pos = hi
        assert pos == b
        return out


def _encode_chunk(
    upload: ShardUpload, plan: _Plan, index: int
) -> tuple[str, str, int, dict | None]:
    """Assemble, (stats,) encode, hash and write chunk `index` of `plan` (runs in the pool)."""
    a = index * plan.chunk
    b = min(a + plan.chunk, plan.rows)
    piece = plan.take(a, b)
    stats = _stats(piece) if plan.stats else None
    if b - a < plan.chunk:  # zarr stores edge chunks at full size, padded with the fill value
        padded = np.zeros((plan.chunk, *plan.row_shape), dtype=plan.dtype)
        padded[: b - a] = piece
        piece = padded
    encoded = plan.codec.encode(np.ascontiguousarray(piece).reshape(-1).view(np.uint8))
    key = chunkio.chunk_key(plan.name, index, 1 + len(plan.row_shape))
    size = upload.put(key, encoded)
    return key, chunkio.digest(encoded), size, stats


def write_shard(
    upload: ShardUpload,
    shard_id: str,
    episodes: Sequence[Episode],
    schema: Schema,
    lineage: Lineage,
    compression: str = "lz4",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> ShardEntry:
    """Write `episodes` as a new Zarr v3 group through `upload` (a backend's, see
    backend.begin_shard) and describe it for a manifest. The root `zarr.json` goes last."""
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

    step_parts: dict[str, list[np.ndarray]] = {}
    for name, spec in schema.step_arrays().items():
        step_parts[name] = [np.ascontiguousarray(e.step_arrays()[name]) for e in episodes]
        assert all(p.dtype.str == spec.dtype for p in step_parts[name])
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
    meta = {
        "format_version": 1,
        "episodes": len(episodes),
        "steps": steps,
        "tasks": tasks,
        "policies": policies,
    }
    if any(e.instruction is not None for e in episodes):  # absent when none has one
        meta["instructions"] = [e.instruction for e in episodes]
    fast = sys.byteorder == "little" and all(
        chunkio.fast_dtype(p[0].dtype) and p[0][0].size > 0
        for p in [*step_parts.values(), *([v] for v in per_episode.values())]
    )
    write = _write_arrays if fast else _write_arrays_zarr
    arrays, files, nbytes = write(
        upload, step_parts, offsets, per_episode, meta, compression, chunk_bytes
    )
    return ShardEntry(
        id=shard_id,
        episodes=len(episodes),
        steps=steps,
        nbytes=nbytes,
        created_at=utc_now(),
        lineage=lineage,
        arrays=dict(sorted(arrays.items())),
        files=dict(sorted(files.items())),
    )


def _write_arrays(
    upload: ShardUpload,
    step_parts: dict[str, list[np.ndarray]],
    offsets: np.ndarray,
    per_episode: dict[str, np.ndarray],
    meta: dict[str, Any],
    compression: str,
    chunk_bytes: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
    """The direct writer: every chunk is a pool task (see chunkio); zarr.json files last."""
    plans: list[_Plan] = []
    sources = [(name, parts, offsets) for name, parts in step_parts.items()]
    sources += [(name, [v], np.array([0, len(v)])) for name, v in per_episode.items()]
    for name, parts, starts in sources:
        first = parts[0]
        chunk = _chunk_steps(max(1, first[0].nbytes), int(starts[-1]), chunk_bytes)
        codecs = chunkio.blosc_json(compression, first.dtype.itemsize)
        meta_json = chunkio.array_json(
            (int(starts[-1]), *first.shape[1:]), first.dtype, (chunk, *first.shape[1:]), compression
        )
        codec = chunkio.ChunkCodec(meta_json["codecs"], first.dtype)
        assert meta_json["codecs"][1:] == codecs
        stats = name in ("observations", "actions")
        plans.append(_Plan(name, parts, starts, chunk, codec, stats))
    tasks = [(p, i) for p in plans for i in range(-(-p.rows // p.chunk))]
    tasks.sort(key=lambda t: -t[0].chunk * t[0].parts[0][0].nbytes)  # big chunks first
    results = chunkio.run_all(lambda t: _encode_chunk(upload, t[0], t[1]), tasks)
    files: dict[str, str] = {}
    nbytes = 0
    chunk_stats: dict[str, list[tuple[int, dict]]] = {"observations": [], "actions": []}
    for (plan, index), (key, digest, size, stats) in zip(tasks, results, strict=True):
        files[key] = digest
        nbytes += size
        if stats is not None:
            chunk_stats[plan.name].append((index, stats))
    meta["stats"] = {
        name: _merge_stats([s for _, s in sorted(parts, key=lambda x: x[0])])
        for name, parts in chunk_stats.items()
    }
    arrays: dict[str, dict[str, Any]] = {}
    documents: dict[str, bytes] = {}
    for plan in plans:
        shape = (plan.rows, *plan.row_shape)
        array_meta = chunkio.array_json(
            shape, plan.dtype, (plan.chunk, *plan.row_shape), compression
        )
        documents[f"{plan.name}/zarr.json"] = chunkio.dump(array_meta)
        arrays[plan.name] = {
            "shape": array_meta["shape"],
            "dtype": array_meta["data_type"],
            "chunks": array_meta["chunk_grid"]["configuration"]["chunk_shape"],
            "codecs": array_meta["codecs"],
            "chunk_key_encoding": array_meta["chunk_key_encoding"],
        }
    groups = {str(parent) for p in plans for parent in Path(p.name).parents} - {"."}
    for sub in sorted(groups):
        # a group holding arrays (infos/): zarr-python writes its zarr.json too
        documents[f"{sub}/zarr.json"] = chunkio.dump(chunkio.group_json({}))
    items = list(documents.items())
    items.append((SHARD_ROOT, chunkio.dump(chunkio.group_json({"flexrl": meta}))))
    sizes = chunkio.run_all(lambda kv: upload.put(kv[0], kv[1]), items[:-1])
    sizes.append(upload.put(*items[-1]))  # last: a shard whose root object exists is complete
    nbytes += sum(sizes)
    files.update((key, chunkio.digest(raw)) for key, raw in items)
    return arrays, files, nbytes


def _write_arrays_zarr(
    upload: ShardUpload,
    step_parts: dict[str, list[np.ndarray]],
    offsets: np.ndarray,
    per_episode: dict[str, np.ndarray],
    meta: dict[str, Any],
    compression: str,
    chunk_bytes: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
    """Fallback through zarr-python for dtypes the direct writer does not take (complex,
    big-endian): same layout, slower. zarr writes into a private directory, whose files then
    go through `upload` (root zarr.json last)."""
    with tempfile.TemporaryDirectory(prefix="flexrl-shard-") as directory:
        return _zarr_write(
            Path(directory), upload, step_parts, per_episode, meta, compression, chunk_bytes
        )


def _zarr_write(
    directory: Path,
    upload: ShardUpload,
    step_parts: dict[str, list[np.ndarray]],
    per_episode: dict[str, np.ndarray],
    meta: dict[str, Any],
    compression: str,
    chunk_bytes: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
    data = {
        name: np.concatenate(parts) if len(parts) > 1 else parts[0]
        for name, parts in step_parts.items()
    }
    stats = {k: _stats(data[k]) for k in ("observations", "actions")}
    meta["stats"] = {
        k: {"count": v["count"], "mean": v["mean"].tolist(), "m2": v["m2"].tolist()}
        for k, v in stats.items()
    }
    store = DigestingStore(directory)
    group = zarr.open_group(store, mode="w-", zarr_format=3, attributes={"flexrl": meta})
    for name, values in {**data, **per_episode}.items():
        row_bytes = max(1, values[0].nbytes) if len(values) else 1
        chunk = _chunk_steps(row_bytes, len(values), chunk_bytes)
        group.create_array(
            name,
            data=values,
            chunks=(chunk, *values.shape[1:]),
            compressors=_codec(compression, values.dtype.itemsize),
            fill_value=0,
            chunk_key_encoding={"name": "default", "separator": chunkio.SEPARATOR},
            config={"write_empty_chunks": True},  # every chunk exists: a missing one is damage
        )
    store.finish()
    arrays: dict[str, dict[str, Any]] = {}
    for key, raw in store.metadata.items():
        name = key[: -len("/zarr.json")] if "/" in key else ""
        array_meta = json.loads(raw)
        if name and array_meta.get("node_type") == "array":
            arrays[name] = {
                "shape": array_meta["shape"],
                "dtype": array_meta["data_type"],
                "chunks": array_meta["chunk_grid"]["configuration"]["chunk_shape"],
                "codecs": array_meta["codecs"],
                "chunk_key_encoding": array_meta["chunk_key_encoding"],
            }
    nbytes = 0
    for key in sorted(store.digests, key=lambda k: k == SHARD_ROOT):  # the root last
        nbytes += upload.put(key, (directory / key).read_bytes())
    return arrays, dict(store.digests), nbytes


class ShardReader:
    """Read access to one committed shard; every byte read from disk is digest-checked.

    Arrays whose codecs chunkio handles (all that flexrl writes) are read directly: each chunk
    object is read, its sha256 compared with the manifest, then decoded (into the caller's
    buffer when a whole chunk is wanted), chunks in parallel. Anything else goes through
    zarr-python and a VerifyingStore, which checks the same digests. From an object store,
    verified objects are kept in the local ObjectCache (by digest), which serves them next time.
    """

    def __init__(self, backend: Backend, key: str, entry: ShardEntry, dataset: str):
        self.backend = backend
        self.key = key  # shards/<id>
        self.entry = entry
        self.label = f"{dataset}/{entry.id}"
        self.cache = object_cache() if backend.remote else None
        self.store = VerifyingStore(self.fetch, entry.files, self.label)
        try:
            raw = self.read_object(SHARD_ROOT)
        except CorruptShardError:
            if not backend.list(key):  # nothing of it at all
                where = backend.where(key).rpartition("/")[0]
                raise CorruptShardError(f"shard {self.label} is missing from {where}") from None
            raise
        try:
            group_meta = json.loads(raw)
            if group_meta.get("node_type") != "group" or group_meta.get("zarr_format") != 3:
                raise ValueError("zarr.json is not a Zarr v3 group")
        except FlexrlError:
            raise
        except Exception as e:
            raise CorruptShardError(f"shard {self.label} cannot be opened: {e}") from None
        meta = (group_meta.get("attributes") or {}).get("flexrl", {})
        self.tasks: list[str] = list(meta.get("tasks", []))
        self.policies: list[str] = list(meta.get("policies", []))
        # per episode, or None for a shard none of whose episodes has an instruction
        self.instructions: list[str | None] | None = meta.get("instructions")
        self.stats: dict[str, Any] = meta.get("stats", {})
        self._group: zarr.Group | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._codecs: dict[str, chunkio.ChunkCodec | None] = {}
        self._layout: dict[str, tuple[tuple[int, ...], int, str]] = {}
        self._episode_table: dict[str, np.ndarray] | None = None

    def fetch(self, key: str) -> bytes | None:
        """One stored object of the shard as it is (None if absent), unchecked."""
        try:
            return self.backend.read(f"{self.key}/{key}")
        except NotFound:
            return None

    def read_object(self, key: str) -> bytes:
        """The bytes of one object of the shard, refused unless they match the manifest. From
        an object store, a verified object is kept in the local cache, keyed by its digest."""
        want = self.entry.files.get(key)
        if self.cache is not None and want is not None:
            cached = self.cache.get(want)
            if cached is not None and digest_bytes(cached) == want:
                return cached
        data = self.fetch(key)
        check_object(self.label, self.entry.files, key, data)
        assert data is not None and want is not None
        if self.cache is not None:
            self.cache.put(want, data)
        return data

    @property
    def group(self) -> zarr.Group:
        if self._group is None:
            try:
                self._group = zarr.open_group(
                    self.store, mode="r", zarr_format=3, use_consolidated=False
                )
            except FlexrlError:
                raise
            except Exception as e:
                raise CorruptShardError(f"shard {self.label} cannot be opened: {e}") from None
        return self._group

    def array(self, name: str) -> zarr.Array:
        """The array through zarr-python (the slow, general path; `read` is the fast one)."""
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

    def _codec(self, name: str) -> chunkio.ChunkCodec | None:
        if name not in self._codecs:
            if name not in self.entry.arrays:
                raise FlexrlError(f"shard {self.label} has no array {name!r}")
            # The array's own zarr.json (digest-checked like every object) is what zarr-python
            # would decode with; reading it also means a damaged one is refused here too.
            raw = self.read_object(f"{name}/zarr.json")
            try:
                meta = json.loads(raw)
                self._layout[name] = (
                    tuple(int(n) for n in meta["shape"]),
                    int(meta["chunk_grid"]["configuration"]["chunk_shape"][0]),
                    meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/"),
                )
            except (ValueError, KeyError, TypeError, IndexError) as e:
                raise CorruptShardError(
                    f"shard {self.label}: array {name!r} has unreadable metadata: {e}"
                ) from None
            try:
                dtype = np.dtype(meta["data_type"])
                codec: chunkio.ChunkCodec | None = chunkio.ChunkCodec(meta["codecs"], dtype)
                if not chunkio.fast_dtype(dtype) or sys.byteorder != "little":
                    codec = None
                if meta["chunk_key_encoding"].get("name") != "default":
                    codec = None
            except (TypeError, ValueError, KeyError):
                codec = None
            self._codecs[name] = codec
        return self._codecs[name]

    def read(
        self,
        name: str,
        start: int | None = None,
        stop: int | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Rows [start, stop) of array `name` (into `out` when given), digest-checked."""
        codec = self._codec(name)
        if codec is None:
            values = self._read_zarr(name, start, stop)
            if out is not None:
                out[...] = values
                return out
            return values
        shape, chunk, separator = self._layout[name]
        rows = shape[0]
        start, stop, _ = slice(start, stop).indices(rows)
        stop = max(start, stop)
        if out is None:
            out = np.empty((stop - start, *shape[1:]), dtype=codec.dtype)

        def one(index: int) -> None:
            key = chunkio.chunk_key(name, index, len(shape), separator)
            data = self.read_object(key)
            lo, hi = index * chunk, min(index * chunk + chunk, rows)
            a, b = max(lo, start), min(hi, stop)
            try:
                if a == lo and b == hi and hi - lo == chunk:
                    codec.decode_into(data, out[a - start : b - start].reshape(-1).view(np.uint8))
                else:
                    whole = np.empty((chunk, *shape[1:]), dtype=codec.dtype)
                    codec.decode_into(data, whole.reshape(-1).view(np.uint8))
                    out[a - start : b - start] = whole[a - lo : b - lo]
            except Exception as e:
                raise CorruptShardError(
                    f"shard {self.label}: array {name!r} chunk {key!r} cannot be decoded: {e}"
                ) from None

        if stop > start:
            chunkio.run_all(one, range(start // chunk, -(-stop // chunk)))
        return out

    def _read_zarr(self, name: str, start: int | None, stop: int | None) -> np.ndarray:
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
