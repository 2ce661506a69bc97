"""PPO checkpoints: one `torch.save` dict of tensors and plain values, read with weights_only.

    format        "flexrl.ppo/1"
    recipe        the TrainRecipe as JSON-like data (model_dump(mode="json"))
    global_step   env steps taken (all envs) when the checkpoint was taken
    update        PPO updates completed; a resumed run starts with update + 1
    obs_dim, act_dim, action_low, action_high
    agent         Agent.state_dict()
    optimizer     Adam.state_dict()
    obs_rms       observation normaliser: mean, var (float64), count
    reward_scaler running std of the discounted return, and each env's running return
    rng           python (random.getstate()), numpy (legacy global state), torch (CPU state)
    envs          per env: MuJoCo state, TimeLimit counter, np_random state and the state of
                  any layer with state_dict() (see flexrl.rl.envs)
    next_obs      the normalised observations the next rollout starts from
    next_done     which envs start a new episode with them
    episode       per-env running return and length, and the recent episode returns

A checkpoint is always taken at an update boundary, so resuming it continues exactly where the
uninterrupted run would have been: the bytes of the latest boundary are kept in memory, and an
interruption writes those (the partial rollout after them is dropped, at most one update).
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexrl.config import TrainRecipe
from flexrl.envs.humanoid import GOAL_SLICE, TRACKING_DIM
from flexrl.errors import FlexrlError
from flexrl.fileio import atomic_write_bytes
from flexrl.rl.agent import Agent, Policy
from flexrl.rl.normalization import ObsNormalizer
from flexrl.workspace import Workspace
from flexrl.workspace.records import Artifact, ArtifactKind, RunRecord

FORMAT = "flexrl.ppo/1"


def get_rng_state() -> dict[str, Any]:
    _kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])


def to_bytes(checkpoint: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def write_checkpoint(path: Path, data: bytes) -> None:
    """Atomically: a reader (or a crash) never sees half a checkpoint."""
    atomic_write_bytes(path, data)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a PPO checkpoint, or a shipped policy's `.safetensors` as one (flexrl.zoo); never
    runs code (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FlexrlError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":  # a shipped policy (flexrl.zoo): what acting needs
        from flexrl.zoo import read_zoo_checkpoint

        return read_zoo_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise FlexrlError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise FlexrlError(f"{path}: not a flexrl PPO checkpoint (expected format {FORMAT})")
    return checkpoint


def run_checkpoint(workspace: Workspace, record: RunRecord) -> tuple[Path, Artifact]:
    """The newest checkpoint a run recorded ("final" if it finished, else "last"), verified
    against the digest in its record."""
    checkpoints = [a for a in record.outputs if a.kind == ArtifactKind.CHECKPOINT]
    if not checkpoints:
        raise FlexrlError(f"run {record.id} has no checkpoint to resume from")
    artifact = checkpoints[-1]
    return workspace.artifact_path(record, artifact), artifact


def load_policy(path: str | Path, device: torch.device | str = "cpu") -> Policy:
    """A policy ready to act from a PPO checkpoint (observation normaliser included)."""
    return checkpoint_policy(load_checkpoint(path), device)


def checkpoint_policy(checkpoint: dict[str, Any], device: torch.device | str = "cpu") -> Policy:
    """A policy ready to act from a PPO checkpoint's dict (as `load_checkpoint` returns it)."""
    recipe = TrainRecipe.model_validate(checkpoint["recipe"])
    agent = Agent(checkpoint["obs_dim"], checkpoint["act_dim"], recipe.ppo.hidden_sizes)
    agent.load_state_dict(checkpoint["agent"])
    normalizer = ObsNormalizer((checkpoint["obs_dim"],), recipe.ppo.clip_obs, recipe.ppo.norm_obs)
    normalizer.load_state_dict(checkpoint["obs_rms"])
    return Policy(
        agent,
        normalizer,
        checkpoint["action_low"].numpy(),
        checkpoint["action_high"].numpy(),
        device=device,
    )


def check_init_source(path: Path, recipe: TrainRecipe, obs_dim: int, act_dim: int) -> None:
    """Refuse, in one line, a checkpoint that `recipe.ppo.init_from` cannot start from: another
    network, or observations of another kind (same size, other meaning)."""
    checkpoint = load_checkpoint(path)
    source = TrainRecipe.model_validate(checkpoint["recipe"])
    have = (checkpoint["obs_dim"], checkpoint["act_dim"], list(source.ppo.hidden_sizes))
    want = (obs_dim, act_dim, list(recipe.ppo.hidden_sizes))
    if source.env.observe_tracking and not recipe.env.observe_tracking:
        raise FlexrlError(f"{path} observed the tracking values: set env.observe_tracking: true")
    widened = TRACKING_DIM if gains_tracking(source, recipe) else 0  # on loading
    if (have[0] + widened, *have[1:]) != want:
        raise FlexrlError(
            f"{path} is a network for {have[0]} observations, {have[1]} actions and hidden "
            f"layers {have[2]}; this recipe's is {want[0]}, {want[1]} and {want[2]}"
        )
    frames = (source.env.observation_frame, recipe.env.observation_frame)
    if source.env.id is None and recipe.env.id is None and frames[0] != frames[1]:
        raise FlexrlError(
            f"{path} observed the {frames[0]} frame, this recipe the {frames[1]} frame "
            "(env.observation_frame): its statistics and weights would read the wrong values"
        )


def gains_tracking(source: TrainRecipe, recipe: TrainRecipe) -> bool:
    """Whether a run of `recipe` observes the tracking values (env.observe_tracking) that the
    policy it starts from, trained by `source`, did not."""
    return recipe.env.observe_tracking and not source.env.observe_tracking


def widen_for_tracking(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's agent and observation statistics widened by the tracking values appended
    after the goal: the first layers read them with zero weights, so the widened policy acts
    exactly as the source did until training finds a use for them; their statistics start as
    the goal's, which commands what they measure. Where the source only ever saw one command
    (goal variance ~0), their variance starts at 1: a measured velocity varies even when the
    command does not, and the reset observations' near-zero spread would clip them."""
    agent = dict(state["agent"])
    for key in ("critic.0.weight", "actor_mean.0.weight"):
        weight = agent[key]
        agent[key] = torch.cat([weight, weight.new_zeros(weight.shape[0], TRACKING_DIM)], dim=1)
    rms = dict(state["obs_rms"])
    goal_var = rms["var"][GOAL_SLICE]
    goal_var = torch.where(goal_var < 1e-6, torch.ones_like(goal_var), goal_var)
    rms["mean"] = torch.cat([rms["mean"], rms["mean"][GOAL_SLICE].repeat(2)])
    rms["var"] = torch.cat([rms["var"], goal_var.repeat(2)])
    return {**state, "agent": agent, "obs_rms": rms, "obs_dim": state["obs_dim"] + TRACKING_DIM}
