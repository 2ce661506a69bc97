"""A bounded local cache of verified objects from object stores, keyed by their sha256.

Reading a remote dataset fetches each chunk over the network. Every chunk's digest is in the
manifest, so a chunk is the same bytes wherever and whenever it is read: once verified, it is
kept here under its digest and served from local disk next time (by any dataset, version or
process). What the cache serves is checked against the digest again by the reader, so a
damaged cache file is fetched anew, never trusted.

Where: $FLEXRL_CACHE_DIR, else $XDG_CACHE_HOME/flexrl/objects (~/.cache/flexrl/objects).
Size: $FLEXRL_CACHE_BYTES (default 8 GiB; 0 turns the cache off). When a put takes it past
its bound, the least recently used objects go until it is at 90%.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from flexrl.fileio import TMP_PREFIX, atomic_write_bytes

DEFAULT_CACHE_BYTES = 8 << 30


class ObjectCache:
    def __init__(self, root: Path, max_bytes: int):
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._total: int | None = None  # bytes held, counted at the first put

    def _path(self, digest: str) -> Path:
        hex_ = digest.removeprefix("sha256:")
        return self.root / hex_[:2] / hex_

    def get(self, digest: str) -> bytes | None:
        path = self._path(digest)
        try:
            data = path.read_bytes()
            os.utime(path)  # recently used
        except OSError:
            return None
        return data

    def put(self, digest: str, data: bytes) -> None:
        if len(data) > self.max_bytes // 8:
            return  # one object must not flush everything else
        path = self._path(digest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # No fsync: a cache file lost in a crash is fetched again.
            atomic_write_bytes(path, data, fsync=False)
        except OSError:
            return  # a cache that cannot write only costs speed
        with self._lock:
            if self._total is None:
                self._total = sum(size for _, size, _ in self._files())
            else:
                self._total += len(data)
            if self._total > self.max_bytes:
                self._evict()

    def _files(self) -> list[tuple[Path, int, float]]:
        found = []
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                if name.startswith(TMP_PREFIX):
                    continue
                path = Path(dirpath) / name
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                found.append((path, stat.st_size, stat.st_mtime))
        return found

    def _evict(self) -> None:
        files = sorted(self._files(), key=lambda f: f[2])  # oldest use first
        total = sum(size for _, size, _ in files)
        for path, size, _ in files:
            if total <= self.max_bytes * 0.9:
                break
            path.unlink(missing_ok=True)
            total -= size
        self._total = total


_caches: dict[tuple[str, int], ObjectCache] = {}


def object_cache() -> ObjectCache | None:
    """The cache the environment names (None when FLEXRL_CACHE_BYTES is 0)."""
    max_bytes = int(os.environ.get("FLEXRL_CACHE_BYTES") or DEFAULT_CACHE_BYTES)
    if max_bytes <= 0:
        return None
    root = os.environ.get("FLEXRL_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = str(Path(base) / "flexrl" / "objects")
    key = (root, max_bytes)
    if key not in _caches:
        _caches[key] = ObjectCache(Path(root), max_bytes)
    return _caches[key]
