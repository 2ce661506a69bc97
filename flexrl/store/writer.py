"""Writing: ShardWriter buffers episodes, writes shards privately, commits versions.

    with ShardWriter("walk", workspace="workspace", lineage=Lineage(producer_run=run.id)) as w:
        for episode in rollouts:
            w.add_episode(observations=obs, actions=act, rewards=rew,
                          terminations=term, truncations=trunc, seed=s, task="walk")
    # leaving the block commits one new version (an exception discards the pending shards)

A shard is written under `tmp/<id>/` and renamed into `shards/<id>/` when complete (on an
object store its objects are put in place, the root `zarr.json` last); it becomes visible only
when a version manifest naming it is created with an exclusive create (S3: If-None-Match). A writer
that loses the race for version N+1 re-reads version N+1 and tries N+2, so any number of
processes can commit into one dataset and nothing is lost.
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from flexrl.errors import FlexrlError
from flexrl.store.backend import SHARD_ROOT
from flexrl.store.catalog import back_to_checkpoint, dataset_paths, read_manifest_file
from flexrl.store.episode import Episode, check_finite, make_episode, narrow_floats, schema_of
from flexrl.store.format import (
    TMP_DIR,
    DatasetPaths,
    Lineage,
    Manifest,
    Schema,
    SegmentRef,
    ShardEntry,
    digest_bytes,
    encode_segment,
    is_checkpoint,
    new_shard_id,
)
from flexrl.store.lease import DEFAULT_LEASE_TTL_S, Lease
from flexrl.store.shard import DEFAULT_CHUNK_BYTES, write_shard

DEFAULT_SHARD_BYTES = 64 << 20
MAX_COMMIT_ATTEMPTS = 10_000


def _check_present(
    paths: DatasetPaths,
    parent: Manifest | None,
    inherited: list[ShardEntry],
    shards: list[ShardEntry],
    files: bool,
) -> None:
    """Refuse to name a shard that is gone: the new version would be unreadable. A shard whose
    root `zarr.json` exists is complete (written last; gc deletes or renames it away first),
    so that suffices for `inherited` (what the parent's file lists, or a new segment holds);
    `files` also checks every object of the writer's own shards."""
    name = paths.address
    present = paths.backend.exists
    for entry in inherited:
        if not present(f"{paths.shard(entry.id)}/{SHARD_ROOT}"):
            assert parent is not None
            raise FlexrlError(
                f"cannot commit to {name}: its latest version v{parent.version} names shard "
                f"{entry.id}, which is gone from shards/, so every later version would be "
                f"damaged too; nothing was committed (see `flexrl data verify {name}`)"
            )
    for entry in shards:
        gone = None if present(f"{paths.shard(entry.id)}/{SHARD_ROOT}") else "directory"
        if gone is None and files:
            prefix = f"{paths.shard(entry.id)}/"
            stored = {o.key.removeprefix(prefix) for o in paths.backend.list(paths.shard(entry.id))}
            gone = next((k for k in entry.files if k not in stored), None)
        if gone is not None:
            raise FlexrlError(
                f"cannot commit to {name}: this writer's shard {entry.id} is gone ({gone} "
                "missing; deleted by `flexrl data gc`?); nothing was committed: write the "
                "episodes again"
            )


def _fold_segment(
    paths: DatasetPaths, parent: Manifest
) -> tuple[list[SegmentRef], list[ShardEntry]]:
    """For a checkpoint on top of `parent`: the segments naming every shard so far (the last
    checkpoint's, plus a new one holding its own shards and every delta's since), and the
    entries of the new one. Its file is written first; the same entries always make the same
    bytes and name, so writers racing for the checkpoint agree."""
    chain = back_to_checkpoint(paths, parent)
    last = chain[-1]
    entries = [s for m in reversed(chain) for s in m.own]
    first = last.segments[-1].last_version + 1 if last.segments else 1
    data = encode_segment(entries)
    ref = SegmentRef(digest_bytes(data), len(entries), first, parent.version)
    key = paths.segment(ref)
    if not paths.backend.create(key, data) and digest_bytes(paths.backend.read(key)) != ref.digest:
        paths.backend.replace(key, data)  # a damaged copy: its right bytes are known
    return [*last.segments, ref], entries


def latest_manifest(paths: DatasetPaths) -> tuple[Manifest, str] | None:
    """The latest version's manifest file alone (a delta holds only the shards it added)."""
    versions = paths.list_versions()
    return read_manifest_file(paths, versions[-1]) if versions else None


def commit_shards(
    paths: DatasetPaths,
    shards: list[ShardEntry],
    schema: Schema,
    lineage: Lineage,
    message: str | None = None,
    known: tuple[Manifest, str] | None = None,
    lease: Lease | None = None,
) -> tuple[Manifest, str]:
    """Create the next version = latest version + `shards`; retry on a lost race. Returns the
    new manifest and its digest.

    Only the latest manifest file is read, except before a checkpoint (every
    CHECKPOINT_EVERY-th version), which reads back to the last one to fold the deltas since
    into a segment. `known` is a (manifest, digest) the caller already read: the first attempt
    builds on it without listing versions/ (versions are created one after another, so if
    its successor exists the create fails and the next attempt lists and re-reads). Right
    before the version is created, the shards it adds and those its parent's file lists (or
    its new segment holds) must exist and `lease` (which keeps gc off `shards`) must still be
    held."""
    for attempt in range(MAX_COMMIT_ATTEMPTS):
        latest: tuple[Manifest, str] | None = known
        if attempt > 0 or known is None:
            latest = latest_manifest(paths)
        parent, parent_digest = latest if latest is not None else (None, None)
        segments, inherited = None, parent.own if parent is not None else []
        if parent is not None:
            problem = parent.schema.mismatch(schema)
            if problem:
                raise FlexrlError(f"cannot commit to {paths.address}: {problem}")
            if is_checkpoint(parent.version + 1):
                segments, inherited = _fold_segment(paths, parent)
        manifest = Manifest.on_top_of(
            parent,
            parent_digest,
            shards,
            name=paths.name,
            schema=schema,
            lineage=lineage,
            message=message,
            segments=segments,
        )
        _check_present(paths, parent, inherited, shards, files=attempt == 0)
        if lease is not None:
            lease.check()
        data = manifest.to_bytes()
        if paths.backend.create(paths.version(manifest.version), data):
            return manifest, digest_bytes(data)
        # Lost the race: someone else made this version. Back off a little, re-read, retry.
        time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 20)))
    raise FlexrlError(f"could not commit to {paths.address} after {MAX_COMMIT_ATTEMPTS} attempts")


class ShardWriter:
    """Buffers episodes, writes them as shards of about `shard_bytes`, commits versions.

    Shards written before `commit()` are invisible to readers. With `auto_commit=True` every
    shard is committed as soon as it is written (a long collection loses at most one shard).
    While it holds uncommitted shards, the writer holds a lease naming them (see lease.py), so
    `gc` on any host leaves them alone. NaN and inf in observations, actions and rewards are
    refused unless `allow_nonfinite=True`. With `float32=True` (what collect and train
    --record-to use) float64 arrays are stored as float32, except where the dataset already
    stores them as float64.
    """

    def __init__(
        self,
        name: str,
        workspace: str | Path | None = None,
        *,
        lineage: Lineage | None = None,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        shard_episodes: int | None = None,
        compression: str = "lz4",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        info_keys: tuple[str, ...] | None = None,
        auto_commit: bool = False,
        durable: bool = True,
        message: str | None = None,
        allow_nonfinite: bool = False,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        float32: bool = False,
    ) -> None:
        self.paths = dataset_paths(workspace, name)
        self.lineage = lineage or Lineage()
        self.shard_bytes = shard_bytes
        self.shard_episodes = shard_episodes
        self.compression = compression
        self.chunk_bytes = chunk_bytes
        self.info_keys = info_keys
        self.auto_commit = auto_commit
        self.durable = durable
        self.message = message
        self.allow_nonfinite = allow_nonfinite
        self.lease_ttl_s = lease_ttl_s
        self.float32 = float32  # store float64 arrays as float32 (narrow_floats)
        self._lease: Lease | None = None  # held while shards are uncommitted
        self._episodes = 0
        latest = latest_manifest(self.paths)
        self._latest = latest  # reused by the first commit if no one committed meanwhile
        self.schema: Schema | None = latest[0].schema if latest else None
        self._buffer: list[Episode] = []
        self._buffer_bytes = 0
        self._pending: list[ShardEntry] = []
        self.committed: list[Manifest] = []

    def add_episode(
        self,
        observations: Any,
        actions: Any,
        rewards: Any,
        terminations: Any,
        truncations: Any,
        **kwargs: Any,
    ) -> None:
        """Buffer one episode (see `make_episode` for the arguments); may write a shard."""
        infos = kwargs.get("infos")
        if infos is not None and self.info_keys is not None:  # before make_episode checks them
            kwargs["infos"] = {k: infos[k] for k in self.info_keys if k in infos}
        self.add(make_episode(observations, actions, rewards, terminations, truncations, **kwargs))

    def add(self, episode: Episode) -> None:
        """Buffer one episode (only the infos named by `info_keys`, when given)."""
        if self.info_keys is not None:
            kept = {k: v for k, v in episode.infos.items() if k in self.info_keys}
            episode = dataclasses.replace(episode, infos=kept)
        if self.float32:
            episode = narrow_floats(episode, self.schema)
        if not self.allow_nonfinite:
            where = f"episode {self._episodes}" + (
                f" (seed {episode.seed})" if episode.seed is not None else ""
            )
            check_finite(episode, f"{self.paths.name}, {where}")
        schema = schema_of(episode)
        if self.schema is None:
            self.schema = schema
        else:
            problem = self.schema.mismatch(schema)
            if problem:
                raise FlexrlError(f"episode does not fit dataset {self.paths.name}: {problem}")
        self._buffer.append(episode)
        self._episodes += 1
        self._buffer_bytes += sum(a.nbytes for a in episode.step_arrays().values())
        full = self._buffer_bytes >= self.shard_bytes or (
            self.shard_episodes is not None and len(self._buffer) >= self.shard_episodes
        )
        if full:
            self.flush()
            if self.auto_commit:
                self.commit()

    def flush(self) -> ShardEntry | None:
        """Write the buffered episodes as one shard (not yet visible: see commit)."""
        if not self._buffer:
            return None
        assert self.schema is not None
        shard_id = new_shard_id()
        if self._lease is None:
            self._lease = Lease(self.paths, self.lease_ttl_s)
        lease = self._lease
        lease.add(shard_id)  # before its directory exists: gc must never see it unnamed
        upload = self.paths.backend.begin_shard(
            self.paths.shard(shard_id), self.paths.staging(shard_id), self.durable
        )
        try:
            entry = write_shard(
                upload,
                shard_id,
                self._buffer,
                self.schema,
                self.lineage,
                self.compression,
                self.chunk_bytes,
            )
            upload.finish()  # complete shards only in shards/
        except BaseException:
            upload.discard()
            lease.remove([shard_id])
            if not self._pending:
                self._release()
            raise
        self._buffer, self._buffer_bytes = [], 0
        self._pending.append(entry)
        return entry

    def hand_over(self) -> list[ShardEntry]:
        """Flush, and the shards this writer holds uncommitted, for another writer (in another
        process) to `adopt`; the shards stay this writer's until `let_go`."""
        self.flush()
        return list(self._pending)

    def let_go(self) -> None:
        """Forget the handed-over shards without deleting them and drop the lease: call once
        the adopting writer's lease names them, so gc sees them protected throughout."""
        self._pending = []
        self._release()

    def adopt(self, shards: list[ShardEntry], schema: Schema) -> None:
        """Take over shards that other writers wrote and handed over: this writer's lease
        names them from now on and its next commit includes them (after its own), so W
        processes' shards become one version."""
        if self.schema is None:
            self.schema = schema
        elif problem := self.schema.mismatch(schema):
            raise FlexrlError(f"shards do not fit dataset {self.paths.name}: {problem}")
        if shards and self._lease is None:
            self._lease = Lease(self.paths, self.lease_ttl_s)
        for entry in shards:
            assert self._lease is not None
            self._lease.add(entry.id)
            self._pending.append(entry)

    def commit(self, message: str | None = None) -> Manifest | None:
        """Flush, then create a version holding every shard written so far; None if empty."""
        self.flush()
        if not self._pending:
            return None
        assert self.schema is not None
        manifest, digest = commit_shards(
            self.paths,
            self._pending,
            self.schema,
            self.lineage,
            message or self.message,
            known=self._latest,
            lease=self._lease,
        )
        self._latest = manifest, digest  # most likely still the latest at the next commit
        self._pending = []
        self._release()
        self.committed.append(manifest)
        return manifest

    def abort(self) -> None:
        """Drop buffered episodes and delete shards written but not committed."""
        self._buffer, self._buffer_bytes = [], 0
        for entry in self._pending:
            self.paths.backend.delete_shard(self.paths.shard(entry.id), TMP_DIR)
        self._pending = []
        self._release()

    def _release(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            try:
                self.commit()
            except BaseException:
                self.abort()  # e.g. its shards are gone: no half-done state, no lease left
                raise
        else:
            self.abort()
