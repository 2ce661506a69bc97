"""Fit a BC or DT module on a dataset version with a Lightning Trainer, into a run directory.

    module, data = build(kind, recipe, "walk@v3", workspace)
    result = fit(FitSettings(...), module, data, run_dir, log_metrics=run.log_metrics)

The Trainer runs on CPU with one torch thread by default (`accelerator: auto` picks CUDA when
present), with a rich progress bar, CSV and TensorBoard loggers under the run directory, and a
ModelCheckpoint writing `last.ckpt` (resume) and the best by val_loss. At the end (or on an
interruption) the network is also written as `policy.pt` (see flexrl.offline.checkpoint), the
file evaluation and `--init-from` read. This module knows nothing about the CLI: the caller
records lineage and passes a metrics callback.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from flexrl.config import FinetuneBCRecipe, FinetuneDTRecipe
from flexrl.errors import FlexrlError
from flexrl.offline.base import OfflinePolicyModule
from flexrl.offline.checkpoint import POLICY_FILE, policy_checkpoint, save_policy
from flexrl.offline.datamodule import OfflineDataModule
from flexrl.seeding import seed_everything

Kind = Literal["bc", "dt"]
Recipe = FinetuneBCRecipe | FinetuneDTRecipe
MetricsLogger = Callable[[int, Mapping[str, float]], None]
CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
STEP_METRIC = "_global_step"

# Lightning's advice to add DataLoader workers does not apply to in-process vectorised batches.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
# Noise on every run that says nothing about it: a deprecation inside Lightning itself, and a
# caution about __len__ with several workers that the DataModule's per-worker seeding handles.
warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
warnings.filterwarnings("ignore", ".*has `__len__` defined. In combination with multi-process.*")
# Lightning's INFO lines (accelerator banners, a cloud-logging advert): the run records these.
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def recipe_model(kind: Kind) -> type[Recipe]:
    return FinetuneBCRecipe if kind == "bc" else FinetuneDTRecipe


def build(
    kind: Kind, recipe: Recipe, dataset: str, workspace: str | Path | None
) -> tuple[OfflinePolicyModule, OfflineDataModule]:
    """The DataModule (set up: split and statistics known) and a freshly initialised module."""
    from flexrl.offline.bc import BCModule
    from flexrl.offline.dt import DTModule

    seed_everything(recipe.seed, recipe.train.torch_threads)
    is_dt = isinstance(recipe, FinetuneDTRecipe)
    data = OfflineDataModule(
        dataset,
        workspace,
        recipe.data,
        mode=kind,
        batch_size=recipe.train.batch_size,
        steps_per_epoch=recipe.train.steps_per_epoch,
        val_batches=recipe.train.val_batches,
        window=recipe.dt.context_len if is_dt else 1,
        rtg_scale=recipe.dt.rtg_scale if is_dt else 1.0,
        seed=recipe.seed,
    )
    data.setup()
    assert data.info is not None
    torch.manual_seed(recipe.seed)  # the same initial weights whatever setup drew
    if kind == "bc":
        return BCModule(recipe, data.info), data  # type: ignore[arg-type]
    return DTModule(recipe, data.info), data  # type: ignore[arg-type]


def init_weights_from(module: OfflinePolicyModule, policy: Mapping[str, Any]) -> None:
    """Start from another run's network (normalisation statistics included, so the weights
    see inputs scaled as they were trained on)."""
    if policy.get("kind") != module.kind:
        raise FlexrlError(
            f"--init-from: a {policy.get('kind')} policy cannot start a {module.kind}"
        )
    try:
        module.net.load_state_dict(policy["state_dict"])
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:200]
        raise FlexrlError(f"--init-from: the network shapes differ ({detail})") from None


@dataclass
class FitSettings:
    run_dir: Path
    resume_from: Path | None = None  # a Lightning last.ckpt
    env: dict[str, Any] | None = None  # copied into policy.pt for evaluation
    progress: bool = True


@dataclass
class FitResult:
    policy: Path
    last: Path | None
    best: Path | None
    global_step: int
    metrics: dict[str, float]


class _RunMetrics(pl.Callback):
    """Mirrors train loss (every log interval) and val_loss (every validation) into the run."""

    def __init__(self, log: MetricsLogger | None, every: int):
        self._log = log
        self.every = every
        self.exception: BaseException | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self._log is None or step % self.every:
            return
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        loss = trainer.strategy.reduce(loss.detach(), reduce_op="mean")  # DDP: every process's
        if trainer.is_global_zero:
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            self._log(step, {"loss": float(loss), "lr": float(lr)})

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get("val_loss")  # synced across DDP processes
        if not trainer.is_global_zero:
            return
        if self._log is not None and value is not None and not trainer.sanity_checking:
            self._log(trainer.global_step, {"val_loss": float(value)})

    def on_train_end(self, trainer, pl_module) -> None:
        # DDP's processes end with the fit; their callback metrics (not their step) come back
        trainer.callback_metrics[STEP_METRIC] = torch.tensor(float(trainer.global_step))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.exception = exception  # Lightning turns Ctrl-C into sys.exit(1); keep the cause


def fit(
    settings: FitSettings,
    module: OfflinePolicyModule,
    data: OfflineDataModule,
    log_metrics: MetricsLogger | None = None,
) -> FitResult:
    cfg = module.train_cfg
    ckpt_dir = settings.run_dir / "artifacts" / CHECKPOINT_DIR
    validate = data.has_validation
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best-{step}" if validate else "step-{step}",
        monitor="val_loss" if validate else None,
        mode="min",
        save_top_k=1,
        save_last=True,
    )
    metrics = _RunMetrics(log_metrics, cfg.log_every_n_steps)
    callbacks: list[pl.Callback] = [checkpoint, metrics]
    if settings.progress:
        callbacks.append(RichProgressBar())
    trainer = pl.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=_strategy(cfg.accelerator, cfg.devices * cfg.num_nodes),
        max_steps=cfg.max_steps,
        max_epochs=-1,
        limit_val_batches=1.0 if validate else 0,
        num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=1,  # each epoch draws its own seeded batches
        gradient_clip_val=cfg.grad_clip,
        log_every_n_steps=cfg.log_every_n_steps,
        logger=[
            CSVLogger(settings.run_dir, name="lightning", version=""),
            TensorBoardLogger(settings.run_dir, name="tensorboard", version=""),
        ],
        callbacks=callbacks,
        enable_progress_bar=settings.progress,
        enable_model_summary=False,
        default_root_dir=settings.run_dir,
    )
    ckpt_path = str(settings.resume_from) if settings.resume_from else None
    interrupted: BaseException | None = None
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        interrupted = metrics.exception
        if not isinstance(interrupted, KeyboardInterrupt):
            raise
    # Whatever ended training, the weights as they are now become the policy file. (Under DDP
    # the processes that trained are gone; their step came back as a callback metric.)
    step = trainer.callback_metrics.pop(STEP_METRIC, None)
    global_step = trainer.global_step if step is None else int(step)
    policy = ckpt_dir / POLICY_FILE
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    save_policy(policy, policy_checkpoint(module.cpu(), global_step, settings.env))
    if interrupted is not None:
        raise interrupted
    last = ckpt_dir / LAST
    best = checkpoint.best_model_path
    values = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return FitResult(
        policy=policy,
        last=last if last.is_file() else None,
        best=Path(best) if best and validate else None,
        global_step=global_step,
        metrics=values,
    )


def _strategy(accelerator: str, processes: int) -> Any:
    """One process: Lightning's default. Several: DDP in processes forked from this one on
    CPU (gloo; the run, the DataModule and the module need not be pickled), spawned on GPUs
    (NCCL; CUDA does not survive a fork). Rank 0's weights come back to this process. Across
    machines (num_nodes > 1) each machine's command is one of the processes: MASTER_ADDR,
    MASTER_PORT, NODE_RANK and LOCAL_RANK in its environment (a Kubernetes Indexed Job sets
    them: flexrl/orchestrate/ddp.py) and Lightning starts no process of its own."""
    if processes == 1:
        return "auto"
    from lightning.pytorch.strategies import DDPStrategy

    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return DDPStrategy(
        start_method="spawn" if gpu else "fork",
        process_group_backend="nccl" if gpu else "gloo",
        find_unused_parameters=True,  # the DT's return and state heads are not in its loss
    )
