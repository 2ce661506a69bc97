"""The DataModule: split by episode, top-%, seeded batches, workers, a small chunk cache."""

from __future__ import annotations

import numpy as np
import torch

from flexrl.config import OfflineDataConfig
from flexrl.offline.datamodule import OfflineDataModule
from flexrl.store import open_dataset


def module(workspace, mode="dt", seed=0, **data) -> OfflineDataModule:
    dm = OfflineDataModule(
        "tiny",
        workspace,
        OfflineDataConfig(**data),
        mode=mode,
        batch_size=16,
        steps_per_epoch=4,
        val_batches=2,
        window=5,
        rtg_scale=10.0,
        seed=seed,
    )
    dm.setup()
    return dm


def batches(dm: OfflineDataModule) -> list[dict[str, torch.Tensor]]:
    return list(dm.train_dataloader())


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            torch.testing.assert_close(x[key], y[key], rtol=0, atol=0)


def test_split_by_episode_and_statistics(workspace) -> None:
    dm = module(workspace, val_fraction=0.25)
    assert dm.ref == "tiny@v1"  # pinned
    assert len(dm.val_episodes) == 3 and len(dm.train_episodes) == 9
    assert not set(dm.val_episodes) & set(dm.train_episodes)
    stats = open_dataset("tiny@v1", workspace).stats()
    np.testing.assert_allclose(dm.info.obs_mean, stats.obs_mean, rtol=1e-6)
    assert (dm.info.obs_dim, dm.info.act_dim, dm.info.goal_dim) == (6, 2, 3)
    dataset = open_dataset("tiny@v1", workspace)
    actions = np.concatenate([dataset.episode(i).actions for i in range(len(dataset))])
    np.testing.assert_array_equal(dm.info.act_low, actions.min(0))  # the actions' whole range
    np.testing.assert_array_equal(dm.info.act_high, actions.max(0))
    for batch in batches(dm):  # training windows only come from training episodes
        assert not set(batch["episodes"].tolist()) & set(dm.val_episodes)
    # a different seed draws a different split
    assert set(module(workspace, seed=1, val_fraction=0.25).val_episodes) != set(dm.val_episodes)


def test_dt_batches_shapes_and_padding(workspace) -> None:
    batch = batches(module(workspace))[0]
    assert batch["observations"].shape == (16, 5, 6)
    assert batch["actions"].shape == (16, 5, 2)
    assert batch["goals"].shape == (16, 5, 3)
    assert batch["returns_to_go"].shape == batch["timesteps"].shape == batch["mask"].shape
    assert batch["mask"][:, -1].all()  # the sampled step is always real
    padded = ~batch["mask"]
    assert (batch["observations"][padded] == 0).all()


def test_bc_batches_are_single_steps(workspace) -> None:
    batch = batches(module(workspace, mode="bc"))[0]
    assert batch["observations"].shape == (16, 6)
    assert batch["goals"].shape == (16, 3)
    assert batch["mask"].all()


def test_top_percent_keeps_the_best_training_episodes(workspace) -> None:
    dm = module(workspace, val_fraction=0.25, top_percent=34)
    returns = open_dataset("tiny@v1", workspace).episode_returns
    full = module(workspace, val_fraction=0.25).train_episodes
    assert len(dm.train_episodes) == 4  # ceil(9 * 0.34)
    worst_kept = returns[dm.train_episodes].min()
    dropped = np.setdiff1d(full, dm.train_episodes)
    assert (returns[dropped] <= worst_kept).all()


def test_seeded_and_epoch_dependent(workspace) -> None:
    a, b = batches(module(workspace)), batches(module(workspace))
    assert_same(a, b)
    c = batches(module(workspace, seed=5))
    assert not torch.equal(a[0]["observations"], c[0]["observations"])


def test_one_worker_gives_the_same_batches(workspace) -> None:
    assert_same(batches(module(workspace)), batches(module(workspace, num_workers=1)))


def test_small_chunk_cache_gives_the_same_batches(workspace) -> None:
    """A cache far smaller than the data (the larger-than-memory path) reads the same values."""
    assert_same(batches(module(workspace)), batches(module(workspace, cache_bytes=1024)))


def test_validation_batches_are_fixed(workspace) -> None:
    dm = module(workspace)
    assert_same(list(dm.val_dataloader()), list(dm.val_dataloader()))
