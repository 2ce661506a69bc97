"""Writing: ShardWriter buffers episodes, writes shards privately, commits versions.

    with ShardWriter("walk", workspace="workspace", lineage=Lineage(producer_run=run.id)) as w:
        for episode in rollouts:
            w.add_episode(observations=obs, actions=act, rewards=rew,
                          terminations=term, truncations=trunc, seed=s, task="walk")
    # leaving the block commits one new version (an exception discards the pending shards)

A shard is written under `tmp/<id>/`, renamed into `shards/<id>/` when complete, and becomes
visible only when a version manifest naming it is created with an exclusive create. A writer
that loses the race for version N+1 re-reads version N+1 and tries N+2, so any number of
processes can commit into one dataset and nothing is lost.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from flexrl.errors import FlexrlError
from flexrl.fileio import create_exclusive
from flexrl.store import chunkio
from flexrl.store.catalog import dataset_paths, read_manifest
from flexrl.store.format import (
    ArraySpec,
    DatasetPaths,
    Lineage,
    Manifest,
    Schema,
    ShardEntry,
    check_name,
    new_shard_id,
    utc_now,
)
from flexrl.store.lease import DEFAULT_LEASE_TTL_S, Lease
from flexrl.store.shard import DEFAULT_CHUNK_BYTES, Episode, write_shard

DEFAULT_SHARD_BYTES = 64 << 20
MAX_COMMIT_ATTEMPTS = 10_000


def _as_array(value: Any, what: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise FlexrlError(f"{what} must be numeric, got dtype {array.dtype}")
    return np.ascontiguousarray(array)


def make_episode(
    observations: Any,
    actions: Any,
    rewards: Any,
    terminations: Any,
    truncations: Any,
    *,
    final_observation: Any = None,
    goals: Any = None,
    infos: Mapping[str, Any] | None = None,
    seed: int | None = None,
    task: str | None = None,
    policy: str | None = None,
) -> Episode:
    """Check one episode's arrays against each other and build an Episode.

    `observations` holds T+1 rows (Minari's convention, the last one after the final step), or
    T rows with `final_observation` given separately.
    """
    act = _as_array(actions, "actions")
    steps = len(act) if act.ndim else 0
    if steps == 0:
        raise FlexrlError("an episode needs at least one step (got 0 actions)")
    obs = _as_array(observations, "observations")
    if final_observation is None:
        if obs.ndim == 0 or len(obs) != steps + 1:
            raise FlexrlError(
                f"observations has {len(obs) if obs.ndim else 0} rows for {steps} actions: "
                "give T+1 observations, or T with final_observation"
            )
        obs, final = obs[:-1], obs[-1]
    else:
        final = _as_array(final_observation, "final_observation")
        if obs.ndim == 0 or len(obs) != steps or final.shape != obs.shape[1:]:
            raise FlexrlError(
                f"observations {obs.shape} and final_observation {final.shape} do not fit "
                f"{steps} actions"
            )
        final = final.astype(obs.dtype, copy=False)
    rew = _as_array(rewards, "rewards")
    if rew.shape != (steps,) or not np.issubdtype(rew.dtype, np.floating):
        raise FlexrlError(f"rewards must be {steps} floats, got shape {rew.shape} {rew.dtype}")
    flags = []
    for flag_name, flag in (("terminations", terminations), ("truncations", truncations)):
        values = _as_array(flag, flag_name)
        if values.shape != (steps,) or (
            values.dtype != np.bool_ and not np.isin(values, (0, 1)).all()
        ):
            raise FlexrlError(f"{flag_name} must be {steps} booleans, got shape {values.shape}")
        flags.append(values.astype(np.bool_, copy=False))
    goal_array = None
    if goals is not None:
        goal_array = _as_array(goals, "goals")
        if goal_array.ndim == 0 or len(goal_array) != steps:
            raise FlexrlError(f"goals must have one row per step ({steps}), got {goal_array.shape}")
    info_arrays = {}
    for key, value in (infos or {}).items():
        check_name(key, "info key")
        values = _as_array(value, f"info {key!r}")
        if values.ndim == 0 or len(values) != steps:
            raise FlexrlError(
                f"info {key!r} must have one row per step ({steps}), got {values.shape}"
            )
        info_arrays[key] = values
    if seed is not None and (not isinstance(seed, int | np.integer) or seed < 0):
        raise FlexrlError(f"seed must be a non-negative integer, got {seed!r}")
    return Episode(
        observations=obs,
        final_observation=final,
        actions=act,
        rewards=rew,
        terminations=flags[0],
        truncations=flags[1],
        goals=goal_array,
        infos=dict(sorted(info_arrays.items())),
        seed=None if seed is None else int(seed),
        task=task,
        policy=policy,
    )


def schema_of(episode: Episode) -> Schema:
    return Schema(
        observations=ArraySpec.of_steps(episode.observations),
        actions=ArraySpec.of_steps(episode.actions),
        rewards=ArraySpec.of_steps(episode.rewards),
        goals=ArraySpec.of_steps(episode.goals) if episode.goals is not None else None,
        infos=tuple((k, ArraySpec.of_steps(v)) for k, v in episode.infos.items()),
    )


def check_finite(episode: Episode, where: str) -> None:
    """Refuse NaN and inf in what learning reads: one line naming the array, step and value."""
    arrays = {
        "observations": episode.observations,
        "final_observation": episode.final_observation[None],
        "actions": episode.actions,
        "rewards": episode.rewards,
    }
    for name, values in arrays.items():
        if not np.issubdtype(values.dtype, np.inexact):
            continue
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            value = values[row][bad[row]].flat[0] if values.ndim > 1 else values[row]
            at = "" if name == "final_observation" else f" at step {row}"
            raise FlexrlError(
                f"{where}: {name} holds {value}{at} ({int(bad.sum())} non-finite values); "
                "nothing was stored (allow_nonfinite=True or --allow-nonfinite stores it anyway)"
            )


def _check_present(
    paths: DatasetPaths, parent: Manifest | None, shards: list[ShardEntry], files: bool
) -> None:
    """Refuse to name a shard that is gone: the new version would be unreadable. A directory
    in shards/ is complete (gc renames one away before deleting it), so a listing suffices;
    `files` also checks every file of the writer's own shards."""
    name = paths.name
    present = set(os.listdir(paths.shards)) if paths.shards.is_dir() else set()
    for entry in parent.shards if parent is not None else []:
        if entry.id not in present:
            raise FlexrlError(
                f"cannot commit to {name}: its latest version v{parent.version} names shard "
                f"{entry.id}, which is gone from shards/, so every later version would be "
                f"damaged too; nothing was committed (see `flexrl data verify {name}`)"
            )
    for entry in shards:
        gone = "directory" if entry.id not in present else None
        if gone is None and files:
            gone = next(
                (k for k in entry.files if not (paths.shards / entry.id / k).is_file()), None
            )
        if gone is not None:
            raise FlexrlError(
                f"cannot commit to {name}: this writer's shard {entry.id} is gone ({gone} "
                "missing; deleted by `flexrl data gc`?); nothing was committed: write the "
                "episodes again"
            )


def latest_manifest(paths: DatasetPaths) -> tuple[Manifest, str] | None:
    versions = paths.list_versions()
    return read_manifest(paths, versions[-1]) if versions else None


def commit_shards(
    paths: DatasetPaths,
    shards: list[ShardEntry],
    schema: Schema,
    lineage: Lineage,
    message: str | None = None,
    known: tuple[Manifest, str] | None = None,
    lease: Lease | None = None,
) -> Manifest:
    """Create the next version = latest version + `shards`; retry on a lost race.

    `known` is a (manifest, digest) the caller already read: it is used instead of reading the
    latest version again when that is still the latest (a version file never changes). Right
    before the version is created, every shard it names must exist and `lease` (which keeps gc
    off `shards`) must still be held."""
    paths.versions.mkdir(parents=True, exist_ok=True)
    for attempt in range(MAX_COMMIT_ATTEMPTS):
        versions = paths.list_versions()
        if known is not None and versions and versions[-1] == known[0].version:
            latest: tuple[Manifest, str] | None = known
        else:
            latest = read_manifest(paths, versions[-1]) if versions else None
        parent_shards: list[ShardEntry] = []
        parent_digest = None
        if latest is not None:
            parent, parent_digest = latest
            problem = parent.schema.mismatch(schema)
            if problem:
                raise FlexrlError(f"cannot commit to {paths.name}: {problem}")
            parent_shards = parent.shards
        version = (latest[0].version if latest else 0) + 1
        manifest = Manifest(
            name=paths.name,
            version=version,
            created_at=utc_now(),
            schema=schema,
            shards=parent_shards + shards,
            added=[s.id for s in shards],
            lineage=lineage,
            parent_digest=parent_digest,
            message=message,
        )
        _check_present(paths, latest[0] if latest else None, shards, files=attempt == 0)
        if lease is not None:
            lease.check()
        if create_exclusive(paths.version(version), manifest.to_bytes()):
            return manifest
        # Lost the race: someone else made this version. Back off a little, re-read, retry.
        time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 20)))
    raise FlexrlError(f"could not commit to {paths.name} after {MAX_COMMIT_ATTEMPTS} attempts")


class ShardWriter:
    """Buffers episodes, writes them as shards of about `shard_bytes`, commits versions.

    Shards written before `commit()` are invisible to readers. With `auto_commit=True` every
    shard is committed as soon as it is written (a long collection loses at most one shard).
    While it holds uncommitted shards, the writer holds a lease naming them (see lease.py), so
    `gc` on any host leaves them alone. NaN and inf in observations, actions and rewards are
    refused unless `allow_nonfinite=True`.
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
        if infos is not None and self.info_keys is not None:
            kwargs["infos"] = {k: infos[k] for k in self.info_keys if k in infos}
        episode = make_episode(observations, actions, rewards, terminations, truncations, **kwargs)
        self.add(episode)

    def add(self, episode: Episode) -> None:
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
        self.paths.tmp.mkdir(parents=True, exist_ok=True)
        self.paths.shards.mkdir(parents=True, exist_ok=True)
        tmp = self.paths.tmp / shard_id
        try:
            entry = write_shard(
                tmp,
                shard_id,
                self._buffer,
                self.schema,
                self.lineage,
                self.compression,
                self.chunk_bytes,
                self.durable,
            )
            os.rename(tmp, self.paths.shards / shard_id)  # complete shards only in shards/
            if self.durable:  # the rename itself survives a power cut before the commit
                chunkio.fsync_dir(self.paths.shards)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            lease.remove([shard_id])
            if not self._pending:
                self._release()
            raise
        self._buffer, self._buffer_bytes = [], 0
        self._pending.append(entry)
        return entry

    def commit(self, message: str | None = None) -> Manifest | None:
        """Flush, then create a version holding every shard written so far; None if empty."""
        self.flush()
        if not self._pending:
            return None
        assert self.schema is not None
        manifest = commit_shards(
            self.paths,
            self._pending,
            self.schema,
            self.lineage,
            message or self.message,
            known=self._latest,
            lease=self._lease,
        )
        self._latest = None
        self._pending = []
        self._release()
        self.committed.append(manifest)
        return manifest

    def abort(self) -> None:
        """Drop buffered episodes and delete shards written but not committed."""
        self._buffer, self._buffer_bytes = [], 0
        for entry in self._pending:
            shutil.rmtree(self.paths.shards / entry.id, ignore_errors=True)
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
