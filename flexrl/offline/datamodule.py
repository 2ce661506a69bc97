"""A LightningDataModule over one dataset version of the store: DT windows or BC transitions.

Data comes from the store's own samplers (`WindowSampler.windows`), so reads go through its
bounded chunk cache and a dataset larger than memory trains with `cache_bytes` of RAM. This
module only picks *which* (episode, step) pairs to read, because the split and the top-%
filter restrict sampling to a subset of episodes, which the samplers do not know about.

- Split by episode: a seeded permutation puts `val_fraction` of the episodes in validation
  (at least one when there are two or more), so no window mixes train and validation steps.
- Top-%: only the best `top_percent`% of the training episodes by return are trained on.
- BC reads windows of one step: the same vectorised path as the DT, and it carries the goal
  (TransitionSampler's batches have no goals and read next observations BC does not need).
- Determinism: batch i of epoch e is drawn from SeedSequence([seed, e, i]) whatever worker
  draws it, so the data is identical with 0, 1 or N DataLoader workers, and a run resumed at
  an epoch boundary sees the batches the uninterrupted run would have. Under DDP each of N
  processes keeps its 1/N slice of a global batch N times the batch size: distinct windows,
  together exactly what one process with the N-fold batch would train on.
- Workers open the dataset themselves (nothing unpicklable crosses the process boundary).
- Normalisation statistics (observation mean/std) are the dataset's, from shard metadata
  (`Dataset.stats()`, no data reads); the modules keep them as buffers, so they are saved in
  every checkpoint.
- Action range: the per-dimension [min, max] of the dataset's actions (one pass over the
  actions column). The models' tanh outputs are mapped onto it, so a policy whose env takes
  actions in [-0.4, 0.4] (Humanoid) can reach them all, and no further.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from flexrl.config import OfflineDataConfig
from flexrl.errors import FlexrlError
from flexrl.store import Dataset, open_dataset
from flexrl.store.sampling import WindowSampler

Mode = Literal["dt", "bc"]
VAL_EPOCH = -1  # the seed "epoch" of validation batches: the same batches every epoch
STD_FLOOR = 1e-6  # features that never vary are left unscaled (std 1), not divided by ~0


@dataclass
class DatasetInfo:
    """What the models need to know about the data (saved in checkpoints)."""

    ref: str  # "name@vN"
    digest: str
    obs_dim: int
    act_dim: int
    goal_dim: int  # 0 when the dataset has no goals
    obs_mean: np.ndarray
    obs_std: np.ndarray
    max_return: float
    max_length: int
    # The actions' range, per dimension; [-1, 1] for checkpoints written before it was kept.
    act_low: np.ndarray | None = None
    act_high: np.ndarray | None = None
    # "command": the goal is each step's command; "instruction": the embedding of the episode's
    # instruction (goal_dim 384)
    condition: str = "command"


@dataclass
class SamplingSpec:
    """Everything a (worker's) batch iterator needs; plain data, so it pickles."""

    ref: str
    workspace: str | None
    mode: Mode
    window: int
    rtg_scale: float
    batch_size: int
    batches: int
    seed: int
    epoch: int
    episodes: np.ndarray  # the episodes this split samples from
    weighting: Literal["length", "episode"]
    cache_bytes: int
    # [episodes in the dataset, goal_dim]: each episode's instruction embedding, given as its
    # goal at every step; None: the steps' own goals
    conditions: np.ndarray | None = None
    # DDP: this process's share of each global batch of batch_size x world_size
    rank: int = 0
    world_size: int = 1


def normalisation(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    stats = dataset.stats()
    mean = np.asarray(stats.obs_mean, dtype=np.float32).reshape(-1)
    std = np.asarray(stats.obs_std, dtype=np.float32).reshape(-1)
    return mean, np.where(std < STD_FLOOR, 1.0, std).astype(np.float32)


def action_range(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension (min, max) of the actions, read shard by shard. A dimension that never
    varies gets a range of width 2 around its value (nothing to scale)."""
    lows, highs = [], []
    for s in range(len(dataset.manifest.shards)):
        actions = dataset.shard(s).read("actions")
        lows.append(actions.min(axis=0))
        highs.append(actions.max(axis=0))
    low = np.min(lows, axis=0).astype(np.float32)
    high = np.max(highs, axis=0).astype(np.float32)
    flat = high - low < STD_FLOOR
    return np.where(flat, low - 1, low), np.where(flat, high + 1, high)


def check_instructions(dataset: Dataset) -> list[str]:
    """Every episode's instruction; a clear error if some episode has none."""
    texts = dataset.episode_instructions.tolist()
    missing = sum(t is None for t in texts)
    if missing:
        raise FlexrlError(
            f"{dataset.ref}: {missing} of {len(texts)} episodes have no instruction; collect "
            "with --instructions, or say their commands in words: flexrl data relabel "
            f"{dataset.ref} --name NEW"
        )
    return texts


def instruction_conditions(dataset: Dataset) -> np.ndarray:
    """[episodes, 384] float32: each episode's instruction embedded (each text once)."""
    from flexrl.language.encoder import encode

    texts = check_instructions(dataset)
    unique = sorted(set(texts))
    embedded = encode(unique)
    return embedded[np.searchsorted(unique, texts)]


def split_episodes(
    returns: np.ndarray, val_fraction: float, top_percent: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) episode indices: a seeded split by episode, then top-% of train by return."""
    n = len(returns)
    order = np.random.default_rng([seed, 7]).permutation(n)
    # At least one validation episode when asked for, and always one to train on.
    n_val = min(max(round(n * val_fraction), 1), n - 1) if val_fraction > 0 and n >= 2 else 0
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    if top_percent < 100:
        keep = max(1, int(np.ceil(len(train) * top_percent / 100)))
        best = np.argsort(-returns[train], kind="stable")[:keep]
        train = np.sort(train[best])
    return train, val


class _Batches(IterableDataset):
    """Yields `spec.batches` ready-made batches (dicts of tensors); workers share them out."""

    def __init__(self, spec: SamplingSpec):
        self.spec = spec

    def __len__(self) -> int:
        return self.spec.batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        spec = self.spec
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        sampler = _open_sampler(spec)
        starts, lengths = sampler.starts[spec.episodes], sampler.lengths[spec.episodes]
        cumulative = np.cumsum(lengths)
        # Every process draws the same global batch and keeps its own slice, so DDP over N
        # processes sees exactly the windows one process sees with N times the batch.
        size = spec.batch_size * spec.world_size
        mine = slice(spec.rank * spec.batch_size, (spec.rank + 1) * spec.batch_size)
        for i in range(worker, spec.batches, workers):
            rng = np.random.default_rng([spec.seed, spec.epoch + 1, i])
            if spec.weighting == "length":  # every step of the subset equally likely
                flat = rng.integers(0, cumulative[-1], size=size)
                pick = np.searchsorted(cumulative, flat, side="right")
                offset = flat - (cumulative[pick] - lengths[pick])
            else:  # every episode equally likely, then a uniform step inside it
                pick = rng.integers(0, len(lengths), size=size)
                offset = (rng.random(size) * lengths[pick]).astype(np.int64)
            pick, offset = pick[mine], offset[mine]
            episodes = spec.episodes[pick].astype(np.int64)
            ends = (starts[pick] + offset).astype(np.int64)
            yield to_tensors(sampler.windows(episodes, ends), spec.mode, spec.conditions)


def _open_sampler(spec: SamplingSpec) -> WindowSampler:
    dataset = open_dataset(spec.ref, spec.workspace)
    return WindowSampler(
        dataset,
        spec.window,
        rtg_scale=spec.rtg_scale,
        seed=spec.seed,
        weighting=spec.weighting,
        cache_bytes=spec.cache_bytes,
    )


def to_tensors(batch, mode: Mode, conditions: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """A WindowBatch as float32/int64/bool tensors; BC gets its single step squeezed out. With
    `conditions`, each window's goal is its episode's row of them, at every step."""
    out = {
        "observations": torch.from_numpy(np.ascontiguousarray(batch.observations, np.float32)),
        "actions": torch.from_numpy(np.ascontiguousarray(batch.actions, np.float32)),
        "returns_to_go": torch.from_numpy(np.ascontiguousarray(batch.returns_to_go, np.float32)),
        "timesteps": torch.from_numpy(np.ascontiguousarray(batch.timesteps, np.int64)),
        "mask": torch.from_numpy(np.ascontiguousarray(batch.mask, bool)),
    }
    if conditions is not None:
        rows = conditions[np.asarray(batch.episodes)]  # [B, goal_dim]
        steps = batch.observations.shape[1]
        out["goals"] = torch.from_numpy(np.repeat(rows[:, None], steps, axis=1))
    elif batch.goals is not None:
        out["goals"] = torch.from_numpy(np.ascontiguousarray(batch.goals, np.float32))
    if mode == "bc":
        out = {k: v[:, -1] for k, v in out.items()}  # window of 1: the sampled step
    out["episodes"] = torch.from_numpy(np.asarray(batch.episodes, np.int64))
    return out


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # N workers x M threads would oversubscribe small machines


class OfflineDataModule(pl.LightningDataModule):
    """Batches for `mode` "dt" (windows of `window` steps) or "bc" (single steps)."""

    def __init__(
        self,
        ref: str,
        workspace: str | Path | None,
        config: OfflineDataConfig,
        *,
        mode: Mode,
        batch_size: int,
        steps_per_epoch: int,
        val_batches: int = 10,
        window: int = 1,
        rtg_scale: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        if mode not in ("dt", "bc"):
            raise FlexrlError(f"unknown mode {mode!r}: use 'dt' or 'bc'")
        self.ref = ref
        self.workspace = None if workspace is None else str(workspace)
        self.config = config
        self.mode: Mode = mode
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.val_batches = val_batches
        self.window = window if mode == "dt" else 1
        self.rtg_scale = rtg_scale
        self.seed = seed
        self.info: DatasetInfo | None = None
        self.train_episodes = np.zeros(0, np.int64)
        self.val_episodes = np.zeros(0, np.int64)

    def setup(self, stage: str | None = None) -> None:
        if self.info is not None:  # idempotent: the CLI calls it before the Trainer does
            return
        dataset = open_dataset(self.ref, self.workspace)
        self.ref = dataset.ref  # pin the version: "walk" -> "walk@v3"
        if len(dataset) == 0:
            raise FlexrlError(f"{dataset.ref} has no episodes to train on")
        schema = dataset.schema
        if len(schema.observations.shape) != 1 or len(schema.actions.shape) != 1:
            raise FlexrlError(
                f"{dataset.ref}: offline training needs flat observations and actions, got "
                f"{tuple(schema.observations.shape)} and {tuple(schema.actions.shape)}"
            )
        mean, std = normalisation(dataset)
        act_low, act_high = action_range(dataset)
        returns = np.asarray(dataset.episode_returns, dtype=np.float64)
        self.train_episodes, self.val_episodes = split_episodes(
            returns, self.config.val_fraction, self.config.top_percent, self.seed
        )
        self.conditions = None
        goal_dim = 0 if schema.goals is None else int(np.prod(schema.goals.shape))
        if self.config.condition == "instruction":
            self.conditions = instruction_conditions(dataset)
            goal_dim = self.conditions.shape[1]
        self.info = DatasetInfo(
            ref=dataset.ref,
            digest=dataset.digest,
            obs_dim=int(schema.observations.shape[0]),
            act_dim=int(schema.actions.shape[0]),
            goal_dim=goal_dim,
            obs_mean=mean,
            obs_std=std,
            max_return=float(returns[self.train_episodes].max()),
            max_length=int(np.max(dataset.episode_lengths)),
            act_low=act_low,
            act_high=act_high,
            condition=self.config.condition,
        )

    @property
    def has_validation(self) -> bool:
        return len(self.val_episodes) > 0

    def _spec(self, episodes: np.ndarray, batches: int, epoch: int) -> SamplingSpec:
        return SamplingSpec(
            ref=self.ref,
            workspace=self.workspace,
            mode=self.mode,
            window=self.window,
            rtg_scale=self.rtg_scale,
            batch_size=self.batch_size,
            batches=batches,
            seed=self.seed,
            epoch=epoch,
            episodes=episodes,
            weighting=self.config.weighting,
            cache_bytes=self.config.cache_bytes,
            conditions=self.conditions,
            rank=self.trainer.global_rank if self.trainer is not None else 0,
            world_size=self.trainer.world_size if self.trainer is not None else 1,
        )

    def _loader(self, spec: SamplingSpec) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(
            _Batches(spec),
            batch_size=None,  # the samplers make whole batches (vectorised)
            num_workers=workers,
            worker_init_fn=_worker_init if workers else None,
            prefetch_factor=4 if workers else None,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        # Lightning reloads this every epoch (reload_dataloaders_every_n_epochs=1): fresh data.
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return self._loader(self._spec(self.train_episodes, self.steps_per_epoch, epoch))

    def val_dataloader(self) -> DataLoader:
        self.setup()
        episodes = self.val_episodes if self.has_validation else self.train_episodes
        return self._loader(self._spec(episodes, self.val_batches, VAL_EPOCH))
