"""Reading: `open_dataset("walk@v3")` pins one version and reads it without any lock.

Committed shards never change, so a version reads the same bytes forever, whatever writers
do meanwhile. Every byte fetched from disk is checked against the manifest's digests.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flexrl.errors import FlexrlError
from flexrl.store.catalog import ResolvedVersion, dataset_paths, read_manifest, resolve
from flexrl.store.episode import Episode
from flexrl.store.format import NO_SEED, DatasetPaths, Manifest, ShardEntry
from flexrl.store.shard import ShardReader

_SHARD_CACHE_SIZE = 512
_shard_cache: OrderedDict[tuple[str, str, str], ShardReader] = OrderedDict()


def _open_shard(paths: DatasetPaths, entry: ShardEntry, dataset: str) -> ShardReader:
    """Shard readers are shared across versions: a shard is immutable once committed."""
    where = paths.where(paths.shard(entry.id))
    key = (where, entry.id, entry.files.get("zarr.json", ""))
    reader = _shard_cache.get(key)
    if reader is None or reader.entry.files != entry.files:
        reader = ShardReader(paths.backend, paths.shard(entry.id), entry, dataset)
        _shard_cache[key] = reader
        while len(_shard_cache) > _SHARD_CACHE_SIZE:
            _shard_cache.popitem(last=False)
    else:
        _shard_cache.move_to_end(key)
    return reader


@dataclass
class Distribution:
    count: int
    mean: float
    std: float
    min: float
    p50: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> Distribution:
        if len(values) == 0:
            return cls(0, *(float("nan"),) * 5)
        v = values.astype(np.float64)
        return cls(
            len(v),
            float(v.mean()),
            float(v.std()),
            float(v.min()),
            float(np.median(v)),
            float(v.max()),
        )


@dataclass
class TaskStats:
    task: str | None
    episodes: int
    steps: int
    returns: Distribution


@dataclass
class PolicyStats:
    policy: str | None  # a checkpoint digest, "random", or None (e.g. imported episodes)
    episodes: int
    steps: int
    returns: Distribution


@dataclass
class DatasetStats:
    """What `flexrl data info` shows, and the normalisation constants training needs."""

    episodes: int
    steps: int
    nbytes: int
    returns: Distribution
    lengths: Distribution
    terminated: int  # episodes that ended with a termination (not a truncation)
    per_task: list[TaskStats]
    per_policy: list[PolicyStats]  # in order of first appearance: appends show as new rows
    obs_mean: np.ndarray
    obs_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray

    def to_json(self) -> dict[str, Any]:
        return {
            "episodes": self.episodes,
            "steps": self.steps,
            "bytes": self.nbytes,
            "returns": vars(self.returns),
            "lengths": vars(self.lengths),
            "terminated": self.terminated,
            "per_task": [
                {
                    "task": t.task,
                    "episodes": t.episodes,
                    "steps": t.steps,
                    "returns": vars(t.returns),
                }
                for t in self.per_task
            ],
            "per_policy": [
                {
                    "policy": p.policy,
                    "episodes": p.episodes,
                    "steps": p.steps,
                    "returns": vars(p.returns),
                }
                for p in self.per_policy
            ],
            "obs_mean": self.obs_mean.tolist(),
            "obs_std": self.obs_std.tolist(),
            "action_mean": self.action_mean.tolist(),
            "action_std": self.action_std.tolist(),
        }


def _merge_moments(
    parts: list[dict[str, Any]], shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std from per-shard (count, mean, m2), merged exactly (Chan et al.)."""
    n, mean, m2 = 0, np.zeros(int(np.prod(shape))), np.zeros(int(np.prod(shape)))
    for part in parts:
        nb, mb, m2b = part["count"], np.asarray(part["mean"]), np.asarray(part["m2"])
        if nb == 0:
            continue
        delta = mb - mean
        total = n + nb
        mean = mean + delta * nb / total
        m2 = m2 + m2b + delta**2 * n * nb / total
        n = total
    std = np.sqrt(m2 / max(n, 1))
    return mean.reshape(shape), std.reshape(shape)


@dataclass
class _Index:
    """Per-episode facts for the whole version, concatenated over shards."""

    shard_of_episode: np.ndarray  # int, which shard holds episode i
    local_episode: np.ndarray  # its index inside that shard
    starts: np.ndarray  # global first step of each episode
    lengths: np.ndarray
    returns: np.ndarray
    seeds: np.ndarray
    tasks: np.ndarray  # object array of str | None
    policies: np.ndarray
    instructions: np.ndarray  # object array of str | None
    shard_step_offsets: np.ndarray  # global first step of each shard, plus total
    local_offsets: list[np.ndarray] = field(default_factory=list)


class Dataset:
    """One version of a dataset. Episodes are numbered 0..len-1 in commit order, so version N's
    episodes are the first episodes of every later version."""

    def __init__(self, resolved: ResolvedVersion, manifest: Manifest, workspace: Path | None):
        self.resolved = resolved
        self.manifest = manifest
        self.paths = dataset_paths(workspace, resolved.address)
        self._shards: list[ShardReader | None] = [None] * len(manifest.shards)
        self._index: _Index | None = None

    # -- identity ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.resolved.name

    @property
    def version(self) -> int:
        return self.resolved.version

    @property
    def ref(self) -> str:
        return self.resolved.ref

    @property
    def digest(self) -> str:
        return self.resolved.digest

    @property
    def schema(self):
        return self.manifest.schema

    def __len__(self) -> int:
        return self.manifest.episodes

    @property
    def num_steps(self) -> int:
        return self.manifest.steps

    def __repr__(self) -> str:
        return f"Dataset({self.ref}, {len(self)} episodes, {self.num_steps} steps)"

    # -- shards and index ------------------------------------------------------------------

    def shard(self, i: int) -> ShardReader:
        reader = self._shards[i]
        if reader is None:
            entry = self.manifest.shards[i]
            reader = _open_shard(self.paths, entry, self.name)
            self._shards[i] = reader
        return reader

    @property
    def index(self) -> _Index:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def _build_index(self) -> _Index:
        shard_of, local, lengths, returns, seeds, tasks, policies, offsets = ([] for _ in range(8))
        instructions = []
        for i in range(len(self.manifest.shards)):
            reader = self.shard(i)
            table = reader.episode_table()
            n = len(table["episode_return"])
            shard_of.append(np.full(n, i, dtype=np.int64))
            local.append(np.arange(n, dtype=np.int64))
            lengths.append(np.diff(table["episode_offsets"]))
            returns.append(table["episode_return"])
            seeds.append(table["episode_seed"])
            names = np.array([None, *reader.tasks], dtype=object)
            tasks.append(names[table["episode_task"] + 1])
            pols = np.array([None, *reader.policies], dtype=object)
            policies.append(pols[table["episode_policy"] + 1])
            said = np.full(n, None, dtype=object)
            if reader.instructions is not None:
                said[:] = reader.instructions
            instructions.append(said)
            offsets.append(table["episode_offsets"])

        def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        lengths_all = cat(lengths, np.int64)
        starts = np.zeros(len(lengths_all), dtype=np.int64)
        np.cumsum(lengths_all[:-1], out=starts[1:]) if len(lengths_all) > 1 else None
        shard_steps = np.array([s.steps for s in self.manifest.shards], dtype=np.int64)
        shard_offsets = np.zeros(len(shard_steps) + 1, dtype=np.int64)
        np.cumsum(shard_steps, out=shard_offsets[1:])
        return _Index(
            shard_of_episode=cat(shard_of, np.int64),
            local_episode=cat(local, np.int64),
            starts=starts,
            lengths=lengths_all,
            returns=cat(returns, np.float64),
            seeds=cat(seeds, np.int64),
            tasks=cat(tasks, object),
            policies=cat(policies, object),
            instructions=cat(instructions, object),
            shard_step_offsets=shard_offsets,
            local_offsets=offsets,
        )

    @property
    def episode_lengths(self) -> np.ndarray:
        return self.index.lengths

    @property
    def episode_returns(self) -> np.ndarray:
        return self.index.returns

    @property
    def episode_starts(self) -> np.ndarray:
        """Global index of each episode's first step in the whole-array view."""
        return self.index.starts

    @property
    def episode_tasks(self) -> np.ndarray:
        return self.index.tasks

    @property
    def episode_instructions(self) -> np.ndarray:
        """What each episode's agent was told (object array of str, None where nothing)."""
        return self.index.instructions

    # -- episodes --------------------------------------------------------------------------

    def episode(self, i: int) -> Episode:
        """Episode i (negative counts from the end), read from its shard."""
        n = len(self)
        if not -n <= i < n:
            raise FlexrlError(f"{self.ref} has {n} episodes; there is no episode {i}")
        i %= n
        idx = self.index
        s, e = int(idx.shard_of_episode[i]), int(idx.local_episode[i])
        reader = self.shard(s)
        lo, hi = (int(v) for v in idx.local_offsets[s][e : e + 2])
        arrays = {name: reader.read(name, lo, hi) for name in self.schema.step_arrays()}
        final = reader.read("final_observations", e, e + 1)[0]
        return self._episode(i, arrays, final)

    def _episode(self, i: int, arrays: dict[str, np.ndarray], final: np.ndarray) -> Episode:
        idx = self.index
        seed = int(idx.seeds[i])
        return Episode(
            observations=arrays["observations"],
            final_observation=final,
            actions=arrays["actions"],
            rewards=arrays["rewards"],
            terminations=arrays["terminations"],
            truncations=arrays["truncations"],
            goals=arrays.get("goals"),
            infos={k[len("infos/") :]: v for k, v in arrays.items() if k.startswith("infos/")},
            seed=None if seed == NO_SEED else seed,
            task=idx.tasks[i],
            policy=idx.policies[i],
            instruction=idx.instructions[i],
            index=i,
        )

    def __iter__(self) -> Iterator[Episode]:
        """All episodes in order, reading each shard's arrays once."""
        idx = self.index
        i = 0
        for s in range(len(self.manifest.shards)):
            reader = self.shard(s)
            arrays = {name: reader.read(name) for name in self.schema.step_arrays()}
            finals = reader.read("final_observations")
            offsets = idx.local_offsets[s]
            for e in range(len(offsets) - 1):
                lo, hi = offsets[e], offsets[e + 1]
                yield self._episode(i, {k: v[lo:hi] for k, v in arrays.items()}, finals[e])
                i += 1

    def array(self, name: str) -> np.ndarray:
        """A whole per-step array (e.g. "observations", "rewards", "infos/x") for every step of
        this version, or a per-episode one ("final_observations"), loaded into memory."""
        if name not in self.schema.step_arrays() and name != "final_observations":
            known = ", ".join([*self.schema.step_arrays(), "final_observations"])
            raise FlexrlError(f"{self.ref} has no array {name!r} (it has: {known})")
        parts = [self.shard(s).read(name) for s in range(len(self.manifest.shards))]
        if parts:
            return np.concatenate(parts)
        spec = self.schema.step_arrays().get(name, self.schema.observations)
        return np.zeros((0, *spec.shape), dtype=spec.dtype)

    # -- statistics ------------------------------------------------------------------------

    def stats(self) -> DatasetStats:
        """Summary statistics; reads only metadata and the per-episode tables."""
        idx = self.index
        terminated = 0

        def groups(labels: list[str | None], order: list[str | None]):
            """(label, episodes, steps, returns) of the episodes carrying each label."""
            for label in order:
                mask = np.array([x == label for x in labels], dtype=bool)
                yield (
                    label,
                    int(mask.sum()),
                    int(idx.lengths[mask].sum()),
                    Distribution.of(idx.returns[mask]),
                )

        tasks = sorted({t for t in idx.tasks if t is not None})
        tasks += [None] if any(t is None for t in idx.tasks) else []
        per_task = [TaskStats(*g) for g in groups(idx.tasks, tasks)]
        # policies in order of first appearance: the order they were appended in
        per_policy = [
            PolicyStats(*g) for g in groups(idx.policies, list(dict.fromkeys(idx.policies)))
        ]
        shards = [self.shard(s) for s in range(len(self.manifest.shards))]
        for reader in shards:
            ends = reader.episode_table()["episode_offsets"][1:] - 1
            if len(ends):
                terminated += int(reader.read("terminations")[ends].sum())
        obs_mean, obs_std = _merge_moments(
            [r.stats["observations"] for r in shards], self.schema.observations.shape
        )
        act_mean, act_std = _merge_moments(
            [r.stats["actions"] for r in shards], self.schema.actions.shape
        )
        return DatasetStats(
            episodes=len(self),
            steps=self.num_steps,
            nbytes=self.manifest.nbytes,
            returns=Distribution.of(idx.returns),
            lengths=Distribution.of(idx.lengths),
            terminated=terminated,
            per_task=per_task,
            per_policy=per_policy,
            obs_mean=obs_mean,
            obs_std=obs_std,
            action_mean=act_mean,
            action_std=act_std,
        )


def open_dataset(ref: str, workspace: str | Path | None = None) -> Dataset:
    """Open `name` (latest), `name@v3` or `name@tag` under `<workspace>/datasets/`, or the same
    with a URI for the name (`s3://bucket/prefix/name@v3`).

    The workspace defaults to $FLEXRL_WORKSPACE or ./workspace.
    """
    resolved = resolve(ref, workspace)
    paths = dataset_paths(workspace, resolved.address)
    manifest, digest = read_manifest(paths, resolved.version)
    if digest != resolved.digest:  # the file changed between two reads: never expected
        raise FlexrlError(f"{resolved.ref}: manifest changed while being read")
    return Dataset(resolved, manifest, None if workspace is None else Path(workspace))
