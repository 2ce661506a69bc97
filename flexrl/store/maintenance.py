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
from flexrl.store.catalog import (
    dataset_paths,
    list_tags,
    read_manifest,
    read_manifest_file,
    read_tag_entry,
    resolve,
    tag_mismatch,
)
from flexrl.store.format import (
    DamagedManifestError,
    DatasetPaths,
    digest_bytes,
    parse_ref,
    shard_owner,
    this_host,
)
from flexrl.store.lease import pid_alive, read_leases
from flexrl.store.shard import ShardReader
from flexrl.store.zstore import array_of

DEFAULT_GRACE_S = 3600.0
DELETED = ".deleted"  # suffix of a directory gc renamed into tmp/ to delete it


@dataclass
class Problem:
    shard: str | None  # shard id, None for the manifest itself
    array: str | None
    message: str

    def __str__(self) -> str:
        where = f"shard {self.shard}" if self.shard else "manifest"
        what = f", array {self.array!r}" if self.array else ""
        sep = " " if self.message.startswith("is ") else ": "  # "manifest is damaged"
        return f"{where}{what}{sep}{self.message}"


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
    total: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Recompute every digest of version `ref` from disk; report each mismatch by shard and array.

    The manifest is checked first (its own digest, its parent's digest, the digest of every tag
    naming it): when it is damaged, its shard digests cannot be trusted and are not compared.
    `total(n)` is called once with the bytes to hash, `progress(n)` with the bytes just hashed.
    """
    parsed = parse_ref(ref)
    paths = dataset_paths(workspace, parsed.name)
    tags: dict[str, str | None] = {}
    if parsed.tag is not None:  # a tag that no longer matches is a finding, not bad input
        version, tags[parsed.tag] = read_tag_entry(paths, parsed.tag)
        ref = f"{parsed.name}@v{version}"
    resolved = resolve(ref, workspace)
    try:
        manifest, digest = read_manifest(paths, resolved.version)
    except DamagedManifestError as e:
        problem = Problem(None, None, str(e).removeprefix(f"{resolved.ref}: manifest "))
        return VerifyReport(resolved.ref, resolved.digest, 0, 0, 0, [problem])
    report = VerifyReport(resolved.ref, digest, len(manifest.shards), 0, manifest.nbytes)
    if total:
        total(manifest.nbytes)
    if manifest.version > 1:
        try:
            parent_digest = digest_bytes(paths.version(manifest.version - 1).read_bytes())
        except FileNotFoundError:
            parent_digest = "missing"
        if parent_digest != manifest.parent_digest:
            report.problems.append(
                Problem(
                    None,
                    None,
                    f"v{manifest.version - 1}'s manifest changed after "
                    f"v{manifest.version} was committed (hash chain broken)",
                )
            )
    tags.update(_tags_of(paths, manifest.version))
    for tag, recorded in sorted(tags.items()):
        if recorded is not None and recorded != digest:
            message = tag_mismatch(paths, tag, manifest.version, recorded, digest)
            report.problems.append(Problem(None, None, message))
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


def _tags_of(paths: DatasetPaths, version: int) -> dict[str, str | None]:
    """The tags pointing at `version`, with the digest each recorded."""
    return {
        tag: read_tag_entry(paths, tag)[1] for tag, v in list_tags(paths).items() if v == version
    }


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
    # "tmp": a shard being written or abandoned; "shard": complete, never committed;
    # "lease": the lease of a writer that is gone
    kind: str
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

    A shard named by a live writer's lease is never deleted (see lease.py for when a lease is
    dead). One no lease names (written by a flexrl without leases) is kept while its writer
    runs on this host, or, from another host, until it is older than `grace_s`.
    """
    paths = dataset_paths(workspace, name)
    if not paths.root.is_dir():
        raise FlexrlError(f"unknown dataset {name!r} (see `flexrl data ls`)")
    if not grace_s >= 0:
        raise FlexrlError(f"--grace must be >= 0 seconds, got {grace_s}")
    # Directories first, then leases, then versions. A writer names a shard in its lease before
    # creating it and drops it only after committing it, so each directory listed here is named
    # by a lease read below or referenced by a version read after that.
    listed = []
    for kind, parent in (("tmp", paths.tmp), ("shard", paths.shards)):
        try:
            listed += [(kind, parent / entry) for entry in sorted(os.listdir(parent))]
        except FileNotFoundError:
            continue
    leases = read_leases(paths)  # a damaged lease stops gc: it may protect a live writer
    referenced: set[str] = set()
    for version in paths.list_versions():
        # Every shard of every version is listed by the manifest file of the version that added
        # it, so the files alone suffice (segments repeat them). An unreadable one stops gc.
        manifest, _ = read_manifest_file(paths, version)
        referenced.update(s.id for s in manifest.own)
    now = time.time()
    dead = {lease.path: lease.expired(now, grace_s) for lease in leases}
    owner = {shard: lease for lease in leases for shard in lease.shards}
    orphans = []
    for kind, path in listed:
        if kind == "shard" and path.name in referenced:
            continue
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue  # renamed or deleted meanwhile
        lease = owner.get(path.name)
        if lease is not None:
            status = "deletable" if dead[lease.path] else "writer running"
        else:
            status = _unleased_status(path.name, age, grace_s)
        orphans.append(Orphan(path, kind, _size(path), age, status))
    for lease in leases:
        if dead[lease.path]:
            orphans.append(
                Orphan(lease.path, "lease", _size(lease.path), now - lease.mtime, "deletable")
            )
    if apply:
        for orphan in orphans:
            if orphan.status == "deletable":
                _delete(orphan.path, paths.tmp)
                orphan.deleted = not orphan.path.exists()
    return orphans


def _delete(path: Path, tmp: Path) -> None:
    """A lease file goes at once; a shard directory is first renamed into tmp/, so a shard
    directory that exists is always complete (a writer checks that before it commits)."""
    if path.is_file():
        path.unlink(missing_ok=True)
        return
    doomed = path if path.name.endswith(DELETED) else tmp / f"{path.name}{DELETED}"
    tmp.mkdir(exist_ok=True)
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _unleased_status(entry: str, age_s: float, grace_s: float) -> str:
    if entry.endswith(DELETED):  # gc was stopped while deleting it
        return "deletable"
    owner = shard_owner(entry)
    if owner is not None and owner[0] == this_host():
        return "writer running" if pid_alive(owner[1]) else "deletable"
    return "recent" if age_s < grace_s else "deletable"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                total += (Path(dirpath) / name).stat().st_size
            except FileNotFoundError:
                continue
    return total
