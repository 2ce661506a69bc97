"""Integrity and housekeeping: verify a version against its digests, collect orphaned shards."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flexrl.errors import FlexrlError
from flexrl.store.backend import DELETED, NotFound
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
    SHARDS_DIR,
    TMP_DIR,
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
    paths = dataset_paths(workspace, parsed.address)
    tags: dict[str, str | None] = {}
    if parsed.tag is not None:  # a tag that no longer matches is a finding, not bad input
        version, tags[parsed.tag] = read_tag_entry(paths, parsed.tag)
        ref = f"{parsed.address}@v{version}"
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
            parent_digest = digest_bytes(paths.backend.read(paths.version(manifest.version - 1)))
        except NotFound:
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
    backend = paths.backend
    for entry in manifest.shards:
        prefix = f"{paths.shard(entry.id)}/"
        stored = {o.key.removeprefix(prefix) for o in backend.list(paths.shard(entry.id))}
        if not stored:
            report.problems.append(Problem(entry.id, None, "shard directory is missing"))
            if progress:
                progress(entry.nbytes)
            continue
        bad = False
        for key, want in entry.files.items():
            report.files += 1
            try:
                data = backend.read(prefix + key) if key in stored else None
            except NotFound:
                data = None
            if data is None:
                report.problems.append(Problem(entry.id, array_of(key), f"file {key} is missing"))
                bad = True
                continue
            if progress:
                progress(len(data))
            if digest_bytes(data) != want:
                report.problems.append(
                    Problem(entry.id, array_of(key), f"file {key} is corrupted (digest mismatch)")
                )
                bad = True
        for extra in sorted(stored - set(entry.files)):
            report.problems.append(Problem(entry.id, array_of(extra), f"unlisted file {extra}"))
            bad = True
        if not bad:  # bytes are right: check the structure agrees with the manifest's counts
            try:
                ShardReader(backend, paths.shard(entry.id), entry, resolved.name).episode_table()
            except FlexrlError as e:
                report.problems.append(Problem(entry.id, None, str(e)))
    return report


def _tags_of(paths: DatasetPaths, version: int) -> dict[str, str | None]:
    """The tags pointing at `version`, with the digest each recorded."""
    return {
        tag: read_tag_entry(paths, tag)[1] for tag, v in list_tags(paths).items() if v == version
    }


@dataclass
class Orphan:
    path: str  # where it is: a local path or a URI
    # "tmp": a shard being written or abandoned; "shard": complete, never committed;
    # "lease": the lease of a writer that is gone
    kind: str
    nbytes: int
    age_s: float
    status: str  # "deletable", "writer running", "recent" (another host's, younger than grace)
    deleted: bool = False
    key: str = ""  # its key in the dataset's storage

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
    if not paths.exists():
        raise FlexrlError(f"unknown dataset {name!r} (see `flexrl data ls`)")
    if not grace_s >= 0:
        raise FlexrlError(f"--grace must be >= 0 seconds, got {grace_s}")
    backend = paths.backend
    # Shards first, then leases, then versions. A writer names a shard in its lease before
    # creating it and drops it only after committing it, so each shard listed here is named
    # by a lease read below or referenced by a version read after that.
    listed = [
        (kind, f"{parent}/{entry}")
        for kind, parent in (("tmp", TMP_DIR), ("shard", SHARDS_DIR))
        for entry in backend.children(parent)
    ]
    leases = read_leases(paths)  # a damaged lease stops gc: it may protect a live writer
    referenced: set[str] = set()
    for version in paths.list_versions():
        # Every shard of every version is listed by the manifest file of the version that added
        # it, so the files alone suffice (segments repeat them). An unreadable one stops gc.
        manifest, _ = read_manifest_file(paths, version)
        referenced.update(s.id for s in manifest.own)
    now = time.time()
    dead = {lease.key: lease.expired(now, grace_s) for lease in leases}
    owner = {shard: lease for lease in leases for shard in lease.shards}
    orphans = []
    for kind, key in listed:
        shard_id = key.rpartition("/")[2]
        if kind == "shard" and shard_id in referenced:
            continue
        nbytes, mtime = backend.tree(key)
        if mtime is None:
            continue  # deleted meanwhile
        age = now - mtime
        lease = owner.get(shard_id)
        if lease is not None:
            status = "deletable" if dead[lease.key] else "writer running"
        else:
            status = _unleased_status(shard_id, age, grace_s)
        orphans.append(Orphan(backend.where(key), kind, nbytes, age, status, key=key))
    for lease in leases:
        if dead[lease.key]:
            where, age = backend.where(lease.key), now - lease.mtime
            orphans.append(Orphan(where, "lease", lease.size, age, "deletable", key=lease.key))
    if apply:
        for orphan in orphans:
            if orphan.status == "deletable":
                if orphan.kind == "lease":
                    backend.delete(orphan.key)
                else:
                    backend.delete_shard(orphan.key, TMP_DIR)
                orphan.deleted = True
    return orphans


def _unleased_status(entry: str, age_s: float, grace_s: float) -> str:
    if entry.endswith(DELETED):  # gc was stopped while deleting it
        return "deletable"
    owner = shard_owner(entry)
    if owner is not None and owner[0] == this_host():
        return "writer running" if pid_alive(owner[1]) else "deletable"
    return "recent" if age_s < grace_s else "deletable"
