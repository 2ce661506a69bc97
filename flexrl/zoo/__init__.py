"""Shipped policies: trained PPO skills that a fresh clone can evaluate, render and collect with.

`zoo:NAME` names one wherever a run or checkpoint is accepted (`flexrl eval zoo:walk_forward`,
`flexrl collect --policy zoo:goal`). Each is two files in this package directory:

  NAME.safetensors   the actor-critic's weights (float32) and the observation normaliser's
                     mean and variance (float64): what acting needs, a few hundred kilobytes
  NAME.json          how it was made: recipe, seed, env steps, training wall time, the digest of
                     the checkpoint it was exported from (and whether mirrored: a turn_right
                     policy may be a turn_left one's mirror image), its `flexrl eval` figures; for a
                     fine-tune also `lineage` (each training it started from, first to last,
                     with its steps and wall time) and `total_global_step` /
                     `total_train_seconds` (the cost from nothing)

`read_zoo_checkpoint` turns the pair into the dict a PPO checkpoint loads as (see
flexrl.rl.checkpoint), so every reader of PPO checkpoints reads zoo policies too.
`export_policy` writes a pair from a training checkpoint (`flexrl zoo export`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flexrl.errors import FlexrlError
from flexrl.fileio import atomic_write_bytes, atomic_write_json

PREFIX = "zoo:"
ZOO_DIR = Path(__file__).parent
SUFFIX = ".safetensors"


def names(directory: Path = ZOO_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob(f"*{SUFFIX}") if p.with_suffix(".json").is_file())


def is_zoo_ref(source: str) -> bool:
    return source.startswith(PREFIX)


def zoo_path(source: str) -> Path:
    """`zoo:NAME` -> the policy's weights file; an unknown name lists the known ones."""
    name = source.removeprefix(PREFIX)
    if name not in names():
        known = ", ".join(PREFIX + n for n in names()) or "none"
        raise FlexrlError(f"unknown shipped policy {source!r}; the zoo has: {known}")
    return ZOO_DIR / f"{name}{SUFFIX}"


def read_info(path: Path) -> dict[str, Any]:
    return json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))


def read_zoo_checkpoint(path: Path) -> dict[str, Any]:
    """A zoo policy as a PPO checkpoint dict holding what acting needs (no optimiser, RNG or
    env state: a zoo policy cannot be resumed, only used)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from flexrl.rl.checkpoint import FORMAT

    try:
        tensors = load_file(path)
        info = read_info(path)
    except (OSError, SafetensorError, json.JSONDecodeError) as e:
        raise FlexrlError(f"{path}: not a readable zoo policy ({e})") from None
    agent = {k.removeprefix("agent."): v for k, v in tensors.items() if k.startswith("agent.")}
    return {
        "format": FORMAT,
        "recipe": info["recipe"],
        "global_step": info["global_step"],
        "obs_dim": int(tensors["obs_rms.mean"].shape[0]),
        "act_dim": int(tensors["action_low"].shape[0]),
        "action_low": tensors["action_low"],
        "action_high": tensors["action_high"],
        "agent": agent,
        "obs_rms": {
            "mean": tensors["obs_rms.mean"],
            "var": tensors["obs_rms.var"],
            "count": float(info["obs_rms_count"]),
        },
    }


def export_policy(
    checkpoint: Path,
    data: dict[str, Any],
    name: str,
    info: dict[str, Any],
    directory: Path = ZOO_DIR,
    mirrored: bool = False,
) -> Path:
    """Write NAME.safetensors and NAME.json from a PPO training checkpoint's `data` (as
    `load_checkpoint` read it from `checkpoint`, or its mirror image, flexrl.rl.symmetry.
    mirror_policy, when `mirrored`); `info` (seed, wall time, eval figures, ...) goes into the
    JSON beside the recipe and step count."""
    import torch
    from safetensors.torch import save

    from flexrl.fileio import sha256_file

    tensors = {f"agent.{k}": v.float().contiguous() for k, v in data["agent"].items()}
    tensors["obs_rms.mean"] = data["obs_rms"]["mean"].double().contiguous()
    tensors["obs_rms.var"] = data["obs_rms"]["var"].double().contiguous()
    tensors["action_low"] = torch.as_tensor(data["action_low"]).double().contiguous()
    tensors["action_high"] = torch.as_tensor(data["action_high"]).double().contiguous()
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}{SUFFIX}"
    atomic_write_bytes(weights, save(tensors))
    atomic_write_json(
        weights.with_suffix(".json"),
        {
            "name": PREFIX + name,
            "recipe": data["recipe"],
            "seed": data["recipe"]["seed"],
            "global_step": int(data["global_step"]),
            "obs_rms_count": float(data["obs_rms"]["count"]),
            "exported_from": {
                "checkpoint": checkpoint.name,
                "sha256": sha256_file(checkpoint),
                "mirrored": mirrored,
            },
            **info,
        },
    )
    return weights
