"""Training samplers over one dataset version: windows for sequence models, transitions for BC.

Both are vectorised (index arithmetic on whole batches, no Python loop per step) and
deterministic for a seed. Reads go through a ChunkCache bounded in bytes: an array that fits
in the budget is filled chunk by chunk into one dense buffer (sampling then costs a numpy
fancy index), a bigger one keeps its most recently used chunks (least recently used evicted).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numpy as np

from flexrl.errors import FlexrlError
from flexrl.store import chunkio
from flexrl.store.reader import Dataset

DEFAULT_CACHE_BYTES = 1 << 30
Weighting = Literal["length", "episode"]


@dataclass
class _Layout:
    """Where each chunk of one array lies in the whole-version step axis."""

    rows: int  # total steps (or episodes for per-episode arrays)
    row_shape: tuple[int, ...]
    dtype: np.dtype
    shard_rows: np.ndarray  # first row of each shard, plus total
    chunk_len: np.ndarray  # chunk length (rows) in each shard
    chunk_base: np.ndarray  # global id of each shard's first chunk
    chunks: int  # chunks in all shards

    @property
    def nbytes(self) -> int:
        return self.rows * int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize


class ChunkCache:
    """Decoded chunks of a dataset version's arrays, at most `max_bytes` in memory."""

    def __init__(self, dataset: Dataset, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.dataset = dataset
        self.max_bytes = max_bytes
        self._layouts: dict[str, _Layout] = {}
        self._dense: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # buffer, loaded flags
        self._complete: set[str] = set()  # dense arrays with every chunk loaded
        self._dense_bytes = 0
        self._lru: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lru_bytes = 0
        self.chunk_reads = 0  # chunks fetched from disk (for benchmarks and tests)

    def layout(self, name: str) -> _Layout:
        if name not in self._layouts:
            shards = self.dataset.manifest.shards
            spec = self.dataset.schema.step_arrays().get(name)
            if spec is None and name != "final_observations":
                raise FlexrlError(f"{self.dataset.ref} has no array {name!r}")
            if spec is None:
                spec = self.dataset.schema.observations
                counts = [s.episodes for s in shards]
            else:
                counts = [s.steps for s in shards]
            rows = np.zeros(len(shards) + 1, dtype=np.int64)
            np.cumsum(counts, out=rows[1:])
            chunk_len = np.array([int(s.arrays[name]["chunks"][0]) for s in shards], dtype=np.int64)
            n_chunks = -(-np.asarray(counts, dtype=np.int64) // np.maximum(chunk_len, 1))
            base = np.zeros(len(shards), dtype=np.int64)
            np.cumsum(n_chunks[:-1], out=base[1:]) if len(shards) > 1 else None
            self._layouts[name] = _Layout(
                int(rows[-1]),
                spec.shape,
                np.dtype(spec.dtype),
                rows,
                chunk_len,
                base,
                int(n_chunks.sum()),
            )
        return self._layouts[name]

    def _read_chunk(self, name: str, shard: int, chunk: int) -> np.ndarray:
        layout = self.layout(name)
        start = int(chunk * layout.chunk_len[shard])
        stop = min(start + int(layout.chunk_len[shard]), int(np.diff(layout.shard_rows)[shard]))
        self.chunk_reads += 1
        return self.dataset.shard(shard).read(name, start, stop)

    def _dense_buffer(self, name: str, layout: _Layout) -> tuple[np.ndarray, np.ndarray] | None:
        """The dense copy of `name` (allocated on first use if it fits in the budget). It has
        one extra row of zeros at the end: index `rows` reads as padding."""
        if name not in self._dense:
            row_bytes = layout.nbytes // max(layout.rows, 1)
            if self._dense_bytes + layout.nbytes + row_bytes > self.max_bytes:
                return None
            buffer = np.empty((layout.rows + 1, *layout.row_shape), dtype=layout.dtype)
            buffer[layout.rows] = 0
            self._dense[name] = (buffer, np.zeros(layout.chunks, dtype=bool))
            self._dense_bytes += layout.nbytes + row_bytes
        return self._dense[name]

    def _load_dense(self, name: str, chunk_ids: np.ndarray) -> None:
        """Read (digest-checked) and decode chunks `chunk_ids` into the dense buffer."""
        layout = self.layout(name)
        buffer, loaded = self._dense[name]
        chunk_ids = np.unique(chunk_ids[~loaded[chunk_ids]])
        if not len(chunk_ids):
            return
        shards = np.searchsorted(layout.chunk_base, chunk_ids, side="right") - 1
        readers = {int(s): self.dataset.shard(int(s)) for s in np.unique(shards)}
        shard_rows = np.diff(layout.shard_rows)

        def load(item: tuple[int, int]) -> None:
            s, c = item
            length = int(layout.chunk_len[s])
            lo = c * length
            hi = min(lo + length, int(shard_rows[s]))
            first = int(layout.shard_rows[s]) + lo
            readers[s].read(name, lo, hi, out=buffer[first : first + hi - lo])

        items = [
            (int(s), int(g - layout.chunk_base[s])) for s, g in zip(shards, chunk_ids, strict=True)
        ]
        chunkio.run_all(load, items)
        loaded[chunk_ids] = True
        self.chunk_reads += len(items)
        if loaded.all():
            self._complete.add(name)

    def preload(self, names: list[str]) -> bool:
        """Load these arrays whole (every chunk read once and digest-checked, in parallel) if
        they fit in the budget; True when all of them are now served from memory."""
        for name in names:
            layout = self.layout(name)
            if name not in self._complete and self._dense_buffer(name, layout) is not None:
                self._load_dense(name, np.arange(layout.chunks))
        return all(name in self._complete for name in names)

    def gather(self, name: str, rows: np.ndarray) -> np.ndarray:
        """`array[rows]` for any integer array of global rows, reading only the chunks needed."""
        layout = self.layout(name)
        flat = np.asarray(rows, dtype=np.int64).ravel()
        if flat.size and (flat.min() < 0 or flat.max() >= layout.rows):
            raise IndexError(f"rows out of range for {name} ({layout.rows} rows)")
        if name in self._complete:  # hot path: everything is in memory
            return self._dense[name][0][flat].reshape(*np.shape(rows), *layout.row_shape)
        shard = np.searchsorted(layout.shard_rows, flat, side="right") - 1
        local = flat - layout.shard_rows[shard]
        chunk = local // layout.chunk_len[shard]
        gid = layout.chunk_base[shard] + chunk
        dense = self._dense_buffer(name, layout)
        if dense is not None:
            self._load_dense(name, gid)
            return dense[0][flat].reshape(*np.shape(rows), *layout.row_shape)
        return self._gather_lru(name, layout, flat, shard, chunk, gid).reshape(
            *np.shape(rows), *layout.row_shape
        )

    def gather_padded(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Like gather, but row index `rows == layout.rows` (one past the end) reads as zeros:
        window padding costs nothing on the in-memory path."""
        if name in self._complete:
            return self._dense[name][0][rows]
        pad = rows == self.layout(name).rows
        values = self.gather(name, np.where(pad, 0, rows))
        values[pad] = 0
        return values

    def _gather_lru(self, name, layout, flat, shard, chunk, gid) -> np.ndarray:
        out = np.empty((len(flat), *layout.row_shape), dtype=layout.dtype)
        within = flat - layout.shard_rows[shard] - chunk * layout.chunk_len[shard]
        order = np.argsort(gid, kind="stable")
        unique, starts = np.unique(gid[order], return_index=True)
        bounds = [*starts.tolist(), len(order)]
        budget = max(self.max_bytes - self._dense_bytes, 0)
        for j in range(len(unique)):  # one iteration per distinct chunk, not per step
            members = order[bounds[j] : bounds[j + 1]]
            key = (name, int(unique[j]))
            values = self._lru.get(key)
            if values is None:
                i = members[0]
                values = self._read_chunk(name, int(shard[i]), int(chunk[i]))
                self._lru[key] = values
                self._lru_bytes += values.nbytes
                while self._lru_bytes > budget and len(self._lru) > 1:
                    _, old = self._lru.popitem(last=False)
                    self._lru_bytes -= old.nbytes
            else:
                self._lru.move_to_end(key)
            out[members] = values[within[members]]
        return out

    @property
    def nbytes(self) -> int:
        return self._dense_bytes + self._lru_bytes


@dataclass
class WindowBatch:
    """B windows of K steps, left-padded: mask[b, k] is False on padding (which is zeros)."""

    observations: np.ndarray  # B x K x obs
    actions: np.ndarray  # B x K x act
    rewards: np.ndarray  # B x K
    returns_to_go: np.ndarray  # B x K, float32, divided by rtg_scale
    timesteps: np.ndarray  # B x K int64, step index inside the episode (0 on padding)
    mask: np.ndarray  # B x K bool
    episodes: np.ndarray  # B int64, episode index in the dataset
    goals: np.ndarray | None = None  # B x K x goal when the dataset has goals


@dataclass
class TransitionBatch:
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    episodes: np.ndarray


class _Sampler:
    def __init__(self, dataset: Dataset, *, seed: int, weighting: Weighting, cache_bytes: int):
        if len(dataset) == 0:
            raise FlexrlError(f"{dataset.ref} has no episodes to sample")
        if weighting not in ("length", "episode"):
            raise FlexrlError(f"unknown weighting {weighting!r}: use 'length' or 'episode'")
        self.dataset = dataset
        self.weighting = weighting
        self.rng = np.random.default_rng(seed)
        self.cache = ChunkCache(dataset, cache_bytes)
        self.starts = dataset.episode_starts
        self.lengths = dataset.episode_lengths
        self.total = dataset.num_steps

    def _sample_steps(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n (episode, global step) pairs; by length every step is equally likely, by episode
        every episode is (then a uniform step inside it)."""
        if self.weighting == "length":
            steps = self.rng.integers(0, self.total, size=n)
            episodes = np.searchsorted(self.starts, steps, side="right") - 1
        else:
            episodes = self.rng.integers(0, len(self.lengths), size=n)
            steps = self.starts[episodes] + (self.rng.random(n) * self.lengths[episodes]).astype(
                np.int64
            )
        return episodes.astype(np.int64), steps.astype(np.int64)


class WindowSampler(_Sampler):
    """Random windows of `window` steps ending at a sampled step, for Decision Transformers.

    A window ending at step e of an episode starting at s covers max(s, e-K+1)..e and is
    left-padded to K. Returns-to-go are the sums of the episode's rewards from each step to
    its end, divided by `rtg_scale`.
    """

    def __init__(
        self,
        dataset: Dataset,
        window: int,
        *,
        rtg_scale: float = 1.0,
        seed: int = 0,
        weighting: Weighting = "length",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        if window < 1:
            raise FlexrlError(f"window must be at least 1 step, got {window}")
        if not rtg_scale > 0:
            raise FlexrlError(f"rtg_scale must be positive, got {rtg_scale}")
        super().__init__(dataset, seed=seed, weighting=weighting, cache_bytes=cache_bytes)
        self.window = window
        self.rtg_scale = rtg_scale
        rtg = _returns_to_go(dataset.array("rewards"), self.starts, self.lengths)
        # scaled once (same float64 division, then float32), plus a 0 for padding at index T
        self._rtg = np.append((rtg / rtg_scale).astype(np.float32), np.float32(0))
        self._offsets = np.arange(self.window, dtype=np.int64) - (self.window - 1)
        self._names = ["observations", "actions", "rewards"] + (
            ["goals"] if dataset.schema.goals is not None else []
        )

    def preload(self) -> bool:
        """Read everything the windows need into memory now (each chunk read once, digest-checked,
        in parallel) when it fits in `cache_bytes`; True if it did. Sampling then never touches
        the disk. Without it, chunks are loaded as windows first need them."""
        return self.cache.preload(self._names)

    def sample(self, batch_size: int) -> WindowBatch:
        episodes, ends = self._sample_steps(batch_size)
        return self.windows(episodes, ends)

    def windows(self, episodes: np.ndarray, ends: np.ndarray) -> WindowBatch:
        """The windows ending at global steps `ends` of `episodes` (vectorised)."""
        rows = ends[:, None] + self._offsets[None, :]
        first = self.starts[episodes][:, None]
        mask = rows >= first
        index = np.where(mask, rows, self.total)  # row `total` reads as zeros (padding)
        out = {name: self.cache.gather_padded(name, index) for name in self._names}
        return WindowBatch(
            observations=out["observations"],
            actions=out["actions"],
            rewards=out["rewards"],
            returns_to_go=self._rtg[index],
            timesteps=np.where(mask, rows - first, 0),
            mask=mask,
            episodes=episodes,
            goals=out.get("goals"),
        )


class TransitionSampler(_Sampler):
    """Random (s, a, r, s', terminated, truncated) transitions, for behaviour cloning. s' of an
    episode's last step is its final observation."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        seed: int = 0,
        weighting: Weighting = "length",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        super().__init__(dataset, seed=seed, weighting=weighting, cache_bytes=cache_bytes)

    def preload(self) -> bool:
        """Read every array transitions need into memory now, if it fits (see WindowSampler)."""
        names = ["observations", "actions", "rewards", "terminations", "truncations"]
        return self.cache.preload([*names, "final_observations"])

    def sample(self, batch_size: int) -> TransitionBatch:
        episodes, steps = self._sample_steps(batch_size)
        return self.transitions(episodes, steps)

    def transitions(self, episodes: np.ndarray, steps: np.ndarray) -> TransitionBatch:
        last = steps == self.starts[episodes] + self.lengths[episodes] - 1
        next_rows = np.where(last, steps, steps + 1)
        next_obs = self.cache.gather("observations", next_rows)
        if last.any():
            next_obs[last] = self.cache.gather("final_observations", episodes[last])
        return TransitionBatch(
            observations=self.cache.gather("observations", steps),
            actions=self.cache.gather("actions", steps),
            rewards=self.cache.gather("rewards", steps),
            next_observations=next_obs,
            terminations=self.cache.gather("terminations", steps),
            truncations=self.cache.gather("truncations", steps),
            episodes=episodes,
        )


def _returns_to_go(rewards: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per step, the sum of its episode's rewards from that step on (float64, vectorised)."""
    r = rewards.astype(np.float64)
    cumulative = np.cumsum(r)
    episode_of_step = np.repeat(np.arange(len(lengths)), lengths)
    ends = starts + lengths - 1
    return cumulative[ends[episode_of_step]] - cumulative + r
