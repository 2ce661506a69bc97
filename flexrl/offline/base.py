"""What BC and the Decision Transformer share: normalisation, masked loss, optimiser, metadata.

A module holds its network (`self.net`, an nn.Module taking raw observations) and its loss;
the data and the CLI live elsewhere. Nothing but tensors and plain values goes into a
checkpoint (no `save_hyperparameters`: its pickled objects would need weights_only=False):
the recipe and the dataset facts travel under `checkpoint["flexrl"]` as JSON-like data.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from flexrl.config import OfflineTrainConfig
from flexrl.errors import FlexrlError
from flexrl.offline.datamodule import DatasetInfo


class ObsNormalizer(nn.Module):
    """(obs - mean) / std with the dataset's statistics, kept as buffers (saved with weights)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, np.float32)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) / self.std


class ActionScaler(nn.Module):
    """Maps actions between the dataset's range [low, high] and tanh's [-1, 1], per dimension.
    Its buffers come from the DatasetInfo saved with every checkpoint, so they are not
    persistent (older policy files, without a range, keep [-1, 1])."""

    def __init__(self, info: DatasetInfo):
        super().__init__()
        low = -np.ones(info.act_dim) if info.act_low is None else info.act_low
        high = np.ones(info.act_dim) if info.act_high is None else info.act_high
        low_t = torch.as_tensor(np.asarray(low, np.float32))
        high_t = torch.as_tensor(np.asarray(high, np.float32))
        self.register_buffer("center", (high_t + low_t) / 2, persistent=False)
        self.register_buffer("half_width", (high_t - low_t) / 2, persistent=False)

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.center) / self.half_width

    def denormalize(self, unit: torch.Tensor) -> torch.Tensor:
        return self.center + unit * self.half_width


def masked_sse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of squared errors over the real steps, number of real steps), on actions scaled to
    [-1, 1]. `where`, not a product with the mask, so whatever sits in padded positions (even
    inf/NaN) cannot reach the loss."""
    err = (pred - target.clamp(-1.0, 1.0)).pow(2).mean(-1)  # tanh cannot go past the bounds
    if mask is None:
        return err.sum(), torch.tensor(float(err.numel()), device=err.device)
    err = torch.where(mask, err, torch.zeros_like(err))
    return err.sum(), mask.sum().to(err.dtype)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the real steps only (see masked_sse)."""
    total, count = masked_sse(pred, target, mask)
    return total / count.clamp(min=1)


def info_to_json(info: DatasetInfo) -> dict[str, Any]:
    data = asdict(info)
    data["obs_mean"] = info.obs_mean.tolist()
    data["obs_std"] = info.obs_std.tolist()
    for key in ("act_low", "act_high"):
        if data[key] is not None:
            data[key] = np.asarray(data[key]).tolist()
    return data


def info_from_json(data: dict[str, Any]) -> DatasetInfo:
    values = dict(data)
    values["obs_mean"] = np.asarray(values["obs_mean"], np.float32)
    values["obs_std"] = np.asarray(values["obs_std"], np.float32)
    for key in ("act_low", "act_high"):
        if values.get(key) is not None:
            values[key] = np.asarray(values[key], np.float32)
    return DatasetInfo(**values)


class OfflinePolicyModule(pl.LightningModule):
    """Base LightningModule: subclasses build `self.net` and define `predict(batch)`."""

    kind: str = ""  # "bc" | "dt"
    net: nn.Module

    def __init__(self, recipe: BaseModel, info: DatasetInfo):
        super().__init__()
        self.recipe = recipe
        self.info = info
        self.train_cfg: OfflineTrainConfig = recipe.train  # type: ignore[attr-defined]

    # -- loss ------------------------------------------------------------------------------

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean squared error over the batch's real steps. Under DDP each process divides by
        the mean count of real steps per process, so the gradients DDP averages (and the
        logged losses, averaged) are exactly those of one process with the whole batch."""
        mask = batch["mask"] if batch["actions"].dim() == 3 else None
        scaler: ActionScaler = self.net.act_scaler  # type: ignore[assignment]
        total, count = masked_sse(
            scaler.normalize(self.predict(batch)), scaler.normalize(batch["actions"]), mask
        )
        trainer = self._trainer  # None outside a Trainer (tests, tools)
        if trainer is not None and trainer.world_size > 1:
            count = trainer.strategy.reduce(count, reduce_op="mean")
        return total / count.clamp(min=1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        if not torch.isfinite(loss):  # stop before NaN reaches the weights and checkpoints
            raise FlexrlError(
                f"{self.kind.upper()} diverged at step {self.global_step}: the loss is "
                f"{loss.item()} (try a lower train.learning_rate); the run failed"
            )
        self.log("loss", loss, prog_bar=True, batch_size=len(batch["actions"]), sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss = self.loss(batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=len(batch["actions"]), sync_dist=True)

    # -- optimisation ----------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        cfg = self.train_cfg
        params = [p for p in self.parameters() if p.requires_grad]  # frozen wpe stays out
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        warmup = max(cfg.warmup_steps, 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / warmup, 1.0)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- checkpoints -----------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "recipe": self.recipe.model_dump(mode="json"),
            "dataset": info_to_json(self.info),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["flexrl"] = self.metadata()
