"""Zarr v3 chunk files written and read directly (numcodecs Blosc + hashlib, in a thread pool).

zarr-python spends most of a shard write in per-array and per-chunk Python overhead, and
compresses, hashes and writes one chunk at a time. Here each chunk is a task for a small thread
pool: assemble the chunk (a view when one episode holds it), encode it with the same codec chain
zarr would use (`bytes` little endian, then Blosc with the same parameters: numcodecs releases
the GIL), sha256 it (hashlib releases the GIL too) and write it under zarr's key
(`c.<i>.<j>`, the `default` chunk key encoding with the `.` separator). The files are byte for
byte what zarr-python writes for the same array, so `zarr.open_group` reads a shard as usual;
tests/store check both.

Reading goes the other way: read the file, check its sha256 against the manifest, then decode
(straight into the caller's buffer when a whole chunk is wanted). A mismatch raises before any
byte is decoded.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256
from typing import Any

import numpy as np
from numcodecs import Blosc

SEPARATOR = "."  # chunk key encoding `default` with "." : every chunk file of an array in one dir
FAST_KINDS = "biuf"  # dtypes written and read without zarr-python (all Box spaces in practice)

_PREFIX = "flexrl-chunks"
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid = -1


def workers() -> int:
    """Threads for chunk work: twice the cores this process may use (fsync and reads wait on
    I/O while others compute), between 2 and 8. FLEXRL_STORE_THREADS overrides."""
    if os.environ.get("FLEXRL_STORE_THREADS"):
        return max(1, int(os.environ["FLEXRL_STORE_THREADS"]))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(2, min(8, 2 * cores))


def pool() -> ThreadPoolExecutor:
    """A process-wide pool, recreated after a fork (a forked child inherits no threads)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(workers(), thread_name_prefix=_PREFIX)
            _pool_pid = os.getpid()
        return _pool


def run_all(fn: Callable[..., Any], items: Iterable[Any]) -> list[Any]:
    """fn(item) for every item, in the pool when there is more than one; results in order.
    Called from a pool thread, it runs inline (a nested wait could starve the pool)."""
    items = list(items)
    if len(items) <= 1 or threading.current_thread().name.startswith(_PREFIX):
        return [fn(item) for item in items]
    return list(pool().map(fn, items))


# -- metadata ------------------------------------------------------------------------------


def fast_dtype(dtype: np.dtype) -> bool:
    return dtype.kind in FAST_KINDS and dtype.byteorder in ("<", "|", "=") and dtype.itemsize > 0


def blosc_json(compression: str, itemsize: int) -> list[dict[str, Any]]:
    """The compressor part of the codec chain (zarr's BloscCodec.to_dict)."""
    if compression == "none":
        return []
    # lz4 (default) is for speed: level 1, no shuffle (float rows still lose their runs of
    # zeros, at several GB/s a core); zstd is for size: level 3 with byte shuffle.
    cname, level, shuffle = (
        ("lz4", 1, "noshuffle") if compression == "lz4" else ("zstd", 3, "shuffle")
    )
    return [
        {
            "name": "blosc",
            "configuration": {
                "typesize": max(1, itemsize),
                "cname": cname,
                "clevel": level,
                "shuffle": shuffle,
                "blocksize": 0,
            },
        }
    ]


def array_json(
    shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...], compression: str
) -> dict[str, Any]:
    """The zarr.json zarr-python 3 writes for this array (same keys, order and values)."""
    if dtype.kind == "b":
        fill: Any = False
    elif dtype.kind == "f":
        fill = 0.0
    else:
        fill = 0
    bytes_codec: dict[str, Any] = {"name": "bytes"}
    if dtype.itemsize > 1:
        bytes_codec["configuration"] = {"endian": "little"}
    return {
        "shape": list(shape),
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": SEPARATOR}},
        "fill_value": fill,
        "codecs": [bytes_codec, *blosc_json(compression, dtype.itemsize)],
        "attributes": {},
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def group_json(attributes: dict[str, Any]) -> dict[str, Any]:
    return {"attributes": attributes, "zarr_format": 3, "node_type": "group"}


def dump(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, indent=2).encode()


def chunk_key(name: str, index: int, ndim: int, separator: str = SEPARATOR) -> str:
    """The key of chunk `index` (along the first axis) of an array chunked on axis 0 only."""
    return f"{name}/c{separator}{index}" + f"{separator}0" * (ndim - 1)


class ChunkCodec:
    """Encode/decode one array's chunks like zarr's codec chain `bytes` (+ `blosc`)."""

    def __init__(self, codecs: list[dict[str, Any]], dtype: np.dtype):
        self.dtype = dtype
        self.blosc: Blosc | None = None
        names = [c.get("name") for c in codecs]
        if names not in (["bytes"], ["bytes", "blosc"]):
            raise ValueError(f"codec chain {names} is not handled directly")
        endian = (codecs[0].get("configuration") or {}).get("endian", "little")
        if dtype.itemsize > 1 and endian != "little":
            raise ValueError("only little-endian chunks are handled directly")
        if len(codecs) == 2:
            c = codecs[1]["configuration"]
            shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[c["shuffle"]]
            self.blosc = Blosc(
                cname=c["cname"],
                clevel=int(c["clevel"]),
                shuffle=shuffle,
                blocksize=int(c.get("blocksize", 0)),
                typesize=int(c["typesize"]),
            )

    def encode(self, chunk: np.ndarray) -> bytes | memoryview:
        if self.blosc is None:
            return memoryview(chunk).cast("B")
        return self.blosc.encode(chunk)

    def decode_into(self, data: bytes, out: np.ndarray) -> None:
        """Decode one whole chunk into `out` (C-contiguous, the chunk's full shape)."""
        if self.blosc is None:
            if len(data) != out.nbytes:
                raise ValueError(f"chunk holds {len(data)} bytes, expected {out.nbytes}")
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, dtype=np.uint8)
        else:
            nbytes = int.from_bytes(data[4:8], "little")  # Blosc header: uncompressed size
            if nbytes != out.nbytes:
                raise ValueError(f"chunk decodes to {nbytes} bytes, expected {out.nbytes}")
            self.blosc.decode(data, out=out)


def digest(data: bytes | memoryview) -> str:
    return "sha256:" + sha256(data).hexdigest()
