"""Integrity and housekeeping: verify a version against its digests, collect orphaned shards."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flexrl.errors import FlexrlError
from flexrl.fileio import sha256_file
from flexrl.store.catalog import dataset_paths, read_manifest, resolve
from flexrl.store.format import shard_owner, this_host
from flexrl.store.shard import ShardReader
from flexrl.store.zstore import array_of

DEFAULT_GRACE_S = 3600.0


@dataclass
class Problem:
    shard: str | None  # shard id, None for the manifest itself
    array: str | None
    message: str

    def __str__(self) -> str:
        where = f"shard {self.shard}" if self.shard else "manifest"
        what = f", array {self.array!r}" if self.array else ""
        return f"{where}{what}: {self.message}"


@dataclass
class VerifyReport:
    ref: str
    digest: str
    shards: int
    files: int
    nbytes: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {
            "ref": self.ref,
            "digest": self.digest,
            "ok": self.ok,
            "shards": self.shards,
            "files": self.files,
            "bytes": self.nbytes,
            "problems": [
                {"shard": p.shard, "array": p.array, "message": p.message} for p in self.problems
            ],
        }


def verify(
    ref: str,
    workspace: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Recompute every digest of version `ref` from disk; report each mismatch by shard and array.

    `progress(n)` is called with the number of bytes just hashed (for a progress bar).
    """
    resolved = resolve(ref, workspace)
    paths = dataset_paths(workspace, resolved.name)
    manifest, digest = read_manifest(paths, resolved.version)
    report = VerifyReport(resolved.ref, digest, len(manifest.shards), 0, manifest.nbytes)
    if manifest.version > 1:
        try:
            _, parent_digest = read_manifest(paths, manifest.version - 1)
            if parent_digest != manifest.parent_digest:
                report.problems.append(
                    Problem(
                        None,
                        None,
                        f"v{manifest.version - 1}'s manifest changed after "
                        f"v{manifest.version} was committed (hash chain broken)",
                    )
                )
        except FlexrlError as e:
            report.problems.append(Problem(None, None, f"parent version unreadable: {e}"))
    for entry in manifest.shards:
        directory = paths.shards / entry.id
        if not directory.is_dir():
            report.problems.append(Problem(entry.id, None, "shard directory is missing"))
            if progress:
                progress(entry.nbytes)
            continue
        bad = False
        for key, want in entry.files.items():
            path = directory / key
            report.files += 1
            try:
                size = path.stat().st_size
                got = sha256_file(path)
            except FileNotFoundError:
                report.problems.append(Problem(entry.id, array_of(key), f"file {key} is missing"))
                bad = True
                continue
            if progress:
                progress(size)
            if got != want:
                report.problems.append(
                    Problem(entry.id, array_of(key), f"file {key} is corrupted (digest mismatch)")
                )
                bad = True
        for extra in _unlisted(directory, entry.files):
            report.problems.append(Problem(entry.id, array_of(extra), f"unlisted file {extra}"))
            bad = True
        if not bad:  # bytes are right: check the structure agrees with the manifest's counts
            try:
                ShardReader(directory, entry, resolved.name).episode_table()
            except FlexrlError as e:
                report.problems.append(Problem(entry.id, None, str(e)))
    return report


def _unlisted(directory: Path, files: dict[str, str]) -> list[str]:
    found = []
    for dirpath, _, names in os.walk(directory):
        for name in names:
            key = (Path(dirpath) / name).relative_to(directory).as_posix()
            if key not in files:
                found.append(key)
    return sorted(found)


@dataclass
class Orphan:
    path: Path
    kind: str  # "tmp": a shard still being written or abandoned; "shard": complete, never committed
    nbytes: int
    age_s: float
    status: str  # "deletable", "writer running", "recent" (another host's, younger than grace)
    deleted: bool = False

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "bytes": self.nbytes,
            "age_s": round(self.age_s, 1),
            "status": self.status,
            "deleted": self.deleted,
        }


def gc(
    name: str,
    workspace: str | Path | None = None,
    apply: bool = False,
    grace_s: float = DEFAULT_GRACE_S,
) -> list[Orphan]:
    """Shards no version references (left by crashed or killed writers); delete with apply=True.

    A shard whose writer still runs on this host is never deleted (it may be about to commit);
    one from another host (a Kubernetes pod) only once older than `grace_s`.
    """
    paths = dataset_paths(workspace, name)
    if not paths.root.is_dir():
        raise FlexrlError(f"unknown dataset {name!r} (see `flexrl data ls`)")
    # Every version, read before listing shards: a shard committed meanwhile is one whose
    # writer is alive, so it is skipped below.
    referenced: set[str] = set()
    for version in paths.list_versions():
        manifest, _ = read_manifest(paths, version)  # an unreadable manifest stops gc: safer
        referenced.update(s.id for s in manifest.shards)
    orphans = []
    now = time.time()
    for kind, parent in (("tmp", paths.tmp), ("shard", paths.shards)):
        try:
            entries = sorted(os.listdir(parent))
        except FileNotFoundError:
            continue
        for entry in entries:
            if kind == "shard" and entry in referenced:
                continue
            path = parent / entry
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue  # renamed or deleted meanwhile
            orphans.append(Orphan(path, kind, _size(path), age, _status(entry, age, grace_s)))
    if apply:
        for orphan in orphans:
            if orphan.status == "deletable":
                shutil.rmtree(orphan.path, ignore_errors=True)
                orphan.deleted = not orphan.path.exists()
    return orphans


def _status(shard_id: str, age_s: float, grace_s: float) -> str:
    owner = shard_owner(shard_id)
    if owner is not None and owner[0] == this_host():
        return "writer running" if _pid_alive(owner[1]) else "deletable"
    return "recent" if age_s < grace_s else "deletable"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                total += (Path(dirpath) / name).stat().st_size
            except FileNotFoundError:
                continue
    return total
