"""Datasets in a workspace: resolve references, list versions, tags, lineage digests.

Everything here only reads, except `tag`, which adds one small object with an exclusive create.
A dataset is a NAME under the workspace's datasets/ or a URI (see format.check_dataset).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from flexrl.errors import FlexrlError
from flexrl.store.backend import NotFound, is_uri, open_backend
from flexrl.store.format import (
    DATASETS_DIR,
    NAME_RE,
    TAGS_DIR,
    DamagedManifestError,
    DatasetPaths,
    Manifest,
    ShardEntry,
    check_tag,
    decode_segment,
    digest_bytes,
    parse_ref,
    utc_now,
)

DEFAULT_WORKSPACE = "workspace"


def default_workspace() -> Path:
    return Path(os.environ.get("FLEXRL_WORKSPACE") or DEFAULT_WORKSPACE)


@dataclass(frozen=True)
class ResolvedVersion:
    """A reference pinned to one version: what lineage records (`name@vN` and its digest)."""

    name: str
    version: int
    digest: str  # "sha256:<hex>" of the manifest file's bytes
    address: str  # the name, or the dataset's URI

    @property
    def ref(self) -> str:
        return f"{self.address}@v{self.version}"


def dataset_paths(workspace: str | Path | None, address: str) -> DatasetPaths:
    """A dataset by NAME (under the workspace) or by URI (the workspace is then unused)."""
    return DatasetPaths.of(default_workspace() if workspace is None else workspace, address)


def read_manifest_file(
    paths: DatasetPaths, version: int, expect_digest: str | None = None
) -> tuple[Manifest, str]:
    """One version's manifest file alone and the digest of its bytes: in format 3 its `own`
    shards are those it added (`shards` stays None until read_manifest resolves it); its
    totals and schema are the version's.
    With `expect_digest` (what the next version recorded), other bytes are a broken chain."""
    try:
        data = paths.backend.read(paths.version(version))
    except NotFound:
        if expect_digest is not None:
            raise DamagedManifestError(
                f"{paths.name}@v{version + 1}: manifest is damaged: v{version}'s manifest, "
                "which it builds on, is missing"
            ) from None
        known = paths.list_versions()
        hint = f"latest is v{known[-1]}" if known else "it has no versions"
        raise FlexrlError(f"unknown version {paths.name}@v{version} ({hint})") from None
    digest = digest_bytes(data)
    if expect_digest is not None and digest != expect_digest:
        raise DamagedManifestError(
            f"{paths.name}@v{version + 1}: manifest is damaged: v{version}'s manifest changed "
            f"after v{version + 1} was committed (hash chain broken)"
        )
    manifest = Manifest.from_bytes(data, f"{paths.name}@v{version}")
    if manifest.version != version or manifest.name != paths.name:
        raise FlexrlError(
            f"{paths.name}@v{version}: manifest names {manifest.name}@v{manifest.version}"
        )
    return manifest, digest


def read_manifest(paths: DatasetPaths, version: int) -> tuple[Manifest, str]:
    """The manifest of one version with every shard it holds, and the digest of its bytes.

    A delta is completed from its parents back to the nearest checkpoint (at most
    CHECKPOINT_EVERY - 1 small files), each parent checked against the digest its child
    recorded, and the checkpoint from its segments, each checked against its digest: an edited
    or missing file is a damaged version, never a silently different one."""
    manifest, digest = read_manifest_file(paths, version)
    chain = back_to_checkpoint(paths, manifest)
    checkpoint = chain[-1]
    if checkpoint.shards is None:
        checkpoint.resolve(read_segments(paths, checkpoint))
    assert checkpoint.shards is not None
    if len(chain) > 1:  # the checkpoint's shards, then each delta's, oldest first
        manifest.resolve(checkpoint.shards + [s for m in reversed(chain[1:-1]) for s in m.own])
    return manifest, digest


def back_to_checkpoint(paths: DatasetPaths, manifest: Manifest) -> list[Manifest]:
    """`manifest`, then its parents' manifest files (each checked against the digest its child
    recorded) down to the nearest checkpoint, which is last."""
    chain = [manifest]
    while not chain[-1].checkpoint:
        child = chain[-1]
        chain.append(read_manifest_file(paths, child.version - 1, child.parent_digest)[0])
    return chain


def read_segments(paths: DatasetPaths, checkpoint: Manifest) -> list[ShardEntry]:
    """Every shard entry before a checkpoint's own, from its segments, in order."""
    where = f"{paths.name}@v{checkpoint.version}"
    entries: list[ShardEntry] = []
    for ref in checkpoint.segments:
        try:
            data = paths.backend.read(paths.segment(ref))
        except NotFound:
            raise DamagedManifestError(
                f"{where}: manifest is damaged: its segment {ref.file} is missing"
            ) from None
        entries += decode_segment(data, ref, where)
    return entries


def resolve(ref: str, workspace: str | Path | None = None) -> ResolvedVersion:
    """`name`, `name@v3` or `name@tag` -> (name, version, manifest digest).

    `flexrl runs lineage name@v3` matches a run's Artifact(kind=DATASET, ref="name@v3",
    digest=...) against this digest.
    """
    parsed = parse_ref(ref)
    paths = dataset_paths(workspace, parsed.address)
    if not paths.exists():
        raise FlexrlError(f"unknown dataset {parsed.address!r} (see `flexrl data ls`)")
    tag_digest = None
    if parsed.tag is not None:
        version, tag_digest = read_tag_entry(paths, parsed.tag)
    elif parsed.version is not None:
        version = parsed.version
    else:
        versions = paths.list_versions()
        if not versions:
            raise FlexrlError(f"dataset {parsed.address!r} has no committed version yet")
        version = versions[-1]
    try:
        data = paths.backend.read(paths.version(version))
    except NotFound:
        read_manifest(paths, version)  # raises the helpful message
        raise
    digest = digest_bytes(data)
    if tag_digest is not None and tag_digest != digest:
        raise FlexrlError(tag_mismatch(paths, parsed.tag or "", version, tag_digest, digest))
    return ResolvedVersion(parsed.name, version, digest, paths.address)


def tag_mismatch(paths: DatasetPaths, tag: str, version: int, recorded: str, actual: str) -> str:
    return (
        f"tag {paths.address}@{tag} records digest {recorded[:19]} for v{version}, but that "
        f"manifest's digest is {actual[:19]}: the manifest or {paths.where(paths.tag(tag))} "
        "was changed (run `flexrl data verify`)"
    )


def read_tag_entry(paths: DatasetPaths, tag: str) -> tuple[int, str | None]:
    """The version a tag points at and the manifest digest it recorded (None if it has none)."""
    try:
        obj = json.loads(paths.backend.read(paths.tag(tag)))
        version = int(obj["version"])
        digest = obj.get("digest")
        if digest is not None and not isinstance(digest, str):
            raise TypeError("digest")
    except NotFound:
        raise FlexrlError(
            f"unknown tag {paths.address}@{tag} (see `flexrl data log {paths.address}`)"
        ) from None
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise FlexrlError(f"tag file {paths.where(paths.tag(tag))} is damaged") from None
    return version, digest


def read_tag(paths: DatasetPaths, tag: str) -> int:
    return read_tag_entry(paths, tag)[0]


def set_tag(
    ref: str, tag: str, workspace: str | Path | None = None, force: bool = False
) -> ResolvedVersion:
    """Point `tag` at the version `ref` resolves to. A tag moves only with force=True."""
    check_tag(tag)
    target = resolve(ref, workspace)
    paths = dataset_paths(workspace, target.address)
    read_manifest(paths, target.version)  # must be readable
    body = json.dumps(
        {"version": target.version, "digest": target.digest, "created_at": utc_now()}, indent=1
    ).encode()
    if force:
        paths.backend.replace(paths.tag(tag), body)
    elif not paths.backend.create(paths.tag(tag), body):
        current, recorded = read_tag_entry(paths, tag)
        if current != target.version:
            raise FlexrlError(
                f"tag {target.address}@{tag} already points at v{current} (use --force to move it)"
            )
        if recorded is not None and recorded != target.digest:
            raise FlexrlError(tag_mismatch(paths, tag, current, recorded, target.digest))
    return target


def list_tags(paths: DatasetPaths) -> dict[str, int]:
    tags = {}
    for name in paths.backend.children(TAGS_DIR):
        if name.endswith(".json") and not name.startswith("."):
            try:
                tags[name[:-5]] = read_tag(paths, name[:-5])
            except FlexrlError:
                continue
    return tags


def list_datasets(workspace: str | Path | None = None, location: str | None = None) -> list[str]:
    """The datasets under the workspace (their names), or under a URI prefix (their URIs)."""
    if location is not None:
        if not is_uri(location):
            raise FlexrlError(
                f"{location!r} is not a URI: list an object store prefix (s3://bucket/prefix), "
                "or a workspace with --workspace"
            )
        base = location.rstrip("/")
        names = open_backend(base).children("")
        return [f"{base}/{n}" for n in names if NAME_RE.fullmatch(n)]
    root = (default_workspace() if workspace is None else Path(workspace)) / DATASETS_DIR
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if NAME_RE.fullmatch(n) and (root / n).is_dir())
