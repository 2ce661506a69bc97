"""Writer leases: how gc tells a live writer's uncommitted shards from a dead writer's.

A writer holding uncommitted shards keeps `leases/<writer id>.json` naming them, and a heartbeat
thread renews it every ttl/4. The writer names a shard in its lease before it creates the
shard's directory and drops it only after a version references it, so gc (which lists
directories, then leases, then versions) never sees a live writer's shard unprotected.

Expiry, as gc judges it: a lease is dead once its writer's pid is gone on this host, or when
the later of its `renewed_at` (the writer's clock) and its file's mtime (the file system's
clock) is more than `ttl_s + grace_s` behind gc's clock. The assumption: the clocks of the hosts
sharing a dataset differ by less than the grace (1 h by default; NTP keeps them within ms).

The writer is stricter than gc: if it has not renewed its lease for ttl/2 (it was stopped,
suspended, or could not write), its lease has lapsed for good, and it refuses to commit.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass

from flexrl.errors import FlexrlError
from flexrl.fileio import TMP_PREFIX
from flexrl.store.backend import NotFound
from flexrl.store.format import LEASES_DIR, DatasetPaths, new_shard_id, shard_owner, this_host

LEASE_FORMAT = "flexrl.lease"
DEFAULT_LEASE_TTL_S = 60.0


class Lease:
    """One writer's lease: created on the first shard, renewed by a thread, released at the end."""

    def __init__(self, paths: DatasetPaths, ttl_s: float = DEFAULT_LEASE_TTL_S) -> None:
        if not ttl_s > 0:
            raise FlexrlError(f"lease_ttl_s must be > 0, got {ttl_s}")
        self.writer = new_shard_id()
        self.backend = paths.backend
        self.key = paths.lease(self.writer)
        self.ttl_s = float(ttl_s)
        self.dataset = paths.address
        self._shards: list[str] = []
        self._lock = threading.Lock()
        self._lapsed: str | None = None
        self._stop = threading.Event()
        with self._lock:
            self._renew()
        self._thread = threading.Thread(target=self._beat, name="flexrl-lease", daemon=True)
        self._thread.start()

    @property
    def shards(self) -> list[str]:
        return list(self._shards)

    def add(self, shard_id: str) -> None:
        """Name a shard before its directory exists."""
        with self._lock:
            self._check()
            self._shards.append(shard_id)
            self._renew()

    def remove(self, shard_ids: list[str]) -> None:
        with self._lock:
            self._shards = [s for s in self._shards if s not in shard_ids]
            if not self._lapsed:
                self._renew()

    def check(self) -> None:
        """Raise unless the lease is certainly still held (called right before a commit)."""
        with self._lock:
            self._check()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self.backend.delete(self.key)

    def _check(self) -> None:
        idle = time.monotonic() - self._renewed
        if self._lapsed is None and idle > self.ttl_s / 2:
            self._lapsed = f"not renewed for {idle:.1f} s"
        if self._lapsed is not None:
            raise FlexrlError(
                f"cannot commit to {self.dataset}: this writer's lease lapsed ({self._lapsed}, "
                f"ttl {self.ttl_s:g} s), so `flexrl data gc` may have deleted its shards; "
                "nothing was committed: write the episodes again"
            )

    def _renew(self) -> None:
        start = time.monotonic()
        body = {
            "format": LEASE_FORMAT,
            "writer": self.writer,
            "host": this_host(),
            "pid": os.getpid(),
            "renewed_at": time.time(),
            "ttl_s": self.ttl_s,
            "shards": self._shards,
        }
        self.backend.replace(self.key, json.dumps(body, indent=1).encode())
        self._renewed = start  # when the content was decided: the conservative end

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            with self._lock:
                try:
                    self._check()  # a lapse is final: gc may already be deleting
                except FlexrlError:
                    return
                try:
                    self._renew()
                except (OSError, FlexrlError):
                    continue  # a storage hiccup; lapses if it lasts ttl/2


@dataclass(frozen=True)
class LeaseRecord:
    """A lease as gc reads it."""

    key: str  # leases/<writer>.json
    host: str
    pid: int
    renewed_at: float  # unix time on the writer's clock
    mtime: float  # unix time on the storage's clock (a file's mtime, an object's Last-Modified)
    size: int
    ttl_s: float
    shards: frozenset[str]

    def expired(self, now: float, grace_s: float) -> bool:
        if self.host == this_host() and not pid_alive(self.pid):
            return True
        return now - max(self.renewed_at, self.mtime) > self.ttl_s + grace_s


def read_leases(paths: DatasetPaths) -> list[LeaseRecord]:
    """Every lease of a dataset. A damaged one stops gc: it may protect a live writer."""
    leases = []
    for info in paths.backend.list(LEASES_DIR):
        name = info.key.rpartition("/")[2]
        if name.startswith(TMP_PREFIX) or not name.endswith(".json"):
            continue
        try:
            obj = json.loads(paths.backend.read(info.key))
            owner = shard_owner(name[: -len(".json")])
            if obj.get("format") != LEASE_FORMAT or owner is None:
                raise ValueError("not a lease")
            leases.append(
                LeaseRecord(
                    key=info.key,
                    host=owner[0],
                    pid=owner[1],
                    renewed_at=float(obj["renewed_at"]),
                    mtime=info.mtime,
                    size=info.size,
                    ttl_s=float(obj["ttl_s"]),
                    shards=frozenset(str(s) for s in obj["shards"]),
                )
            )
        except NotFound:
            continue  # released meanwhile
        except (ValueError, KeyError, TypeError, AttributeError):
            raise FlexrlError(
                f"writer lease {paths.where(info.key)} is damaged; delete it once no writer of "
                f"{paths.address} runs"
            ) from None
    return leases


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
