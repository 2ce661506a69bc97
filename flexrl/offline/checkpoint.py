"""Policy files of finetune runs: what `flexrl eval`, actors and `--init-from` load.

A finetune run writes two kinds of checkpoint under `artifacts/checkpoints/`:
- Lightning's `last.ckpt` (and the best by val_loss): full training state for `--resume`.
  They hold only tensors and plain values, so they load with weights_only=True too.
- `policy.pt`, one `torch.save` dict of tensors and plain values (read with weights_only=True):

    format         "flexrl.bc/1" | "flexrl.dt/1"
    kind           "bc" | "dt"
    recipe         the FinetuneBCRecipe / FinetuneDTRecipe as JSON-like data
    dataset        DatasetInfo as JSON-like data: ref "name@vN", digest, obs/act/goal dims,
                   obs_mean, obs_std (also inside state_dict as buffers), max_return, max_length
    state_dict     the network's state_dict (BCPolicy / DecisionTransformer; normaliser included)
    global_step    optimizer steps behind the weights
    target_return  DT only: the raw return the actor is conditioned on by default
    env            the EnvConfig to evaluate in (JSON-like), or None when unknown
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from flexrl.config import FinetuneBCRecipe, FinetuneDTRecipe
from flexrl.errors import FlexrlError
from flexrl.fileio import atomic_write_bytes
from flexrl.workspace import Workspace
from flexrl.workspace.records import Artifact, ArtifactKind, RunRecord

if TYPE_CHECKING:  # Lightning takes seconds to import: only what trains or builds needs it
    from flexrl.offline.base import OfflinePolicyModule

FORMATS = {"bc": "flexrl.bc/1", "dt": "flexrl.dt/1"}
POLICY_FILE = "policy.pt"
POLICY_ROLE = "policy"


def policy_checkpoint(
    module: OfflinePolicyModule, global_step: int, env: dict[str, Any] | None
) -> dict[str, Any]:
    from flexrl.offline.base import info_to_json

    data: dict[str, Any] = {
        "format": FORMATS[module.kind],
        "kind": module.kind,
        "recipe": module.recipe.model_dump(mode="json"),
        "dataset": info_to_json(module.info),
        "state_dict": {k: v.detach().cpu().clone() for k, v in module.net.state_dict().items()},
        "global_step": int(global_step),
        "env": env,
    }
    if module.kind == "dt":
        target = module.recipe.dt.target_return  # type: ignore[attr-defined]
        data["target_return"] = float(module.info.max_return if target is None else target)
    return data


def save_policy(path: Path, checkpoint: dict[str, Any]) -> None:
    """Atomically: a reader (or a crash) never sees half a file."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_policy_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a BC/DT policy file with weights_only=True (it cannot run code)."""
    path = Path(path)
    if not path.is_file():
        raise FlexrlError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise FlexrlError(
            f"{path}: not a readable checkpoint ({type(e).__name__}: {first})"
        ) from None
    if not isinstance(data, dict) or data.get("format") not in FORMATS.values():
        expected = " or ".join(FORMATS.values())
        raise FlexrlError(f"{path}: not a flexrl BC/DT policy file (expected format {expected})")
    return data


def is_offline_checkpoint(data: Any) -> bool:
    return isinstance(data, dict) and data.get("format") in FORMATS.values()


def build_network(data: dict[str, Any]) -> nn.Module:
    """The network of a policy file, weights loaded, in eval mode, on the CPU."""
    from flexrl.offline.base import info_from_json
    from flexrl.offline.bc import BCPolicy
    from flexrl.offline.dt import DecisionTransformer

    info = info_from_json(data["dataset"])
    if data["kind"] == "bc":
        net: nn.Module = BCPolicy(info, FinetuneBCRecipe.model_validate(data["recipe"]).bc)
    else:
        net = DecisionTransformer(info, FinetuneDTRecipe.model_validate(data["recipe"]).dt)
    net.load_state_dict(data["state_dict"])
    return net.eval()


def run_policy_file(workspace: Workspace, record: RunRecord) -> tuple[Path, Artifact]:
    """The policy file a finetune run recorded, verified against its digest."""
    found = [
        a for a in record.outputs if a.kind == ArtifactKind.CHECKPOINT and a.role == POLICY_ROLE
    ]
    if not found:
        raise FlexrlError(f"run {record.id} has no BC/DT policy file (is it a finetune run?)")
    artifact = found[-1]
    return workspace.artifact_path(record, artifact), artifact
