"""Policy sources: what `flexrl eval SOURCE` and `flexrl collect --policy SOURCE` name, resolved
into one `PolicySource` that makes `Actor`s.

    SOURCE = RUN (id, unique prefix or name: its newest checkpoint, or a finetune run's policy)
           | PATH (a PPO checkpoint .pt or a BC/DT policy file)
           | zoo:NAME (a shipped policy, flexrl.zoo)
           | random (uniform actions in the action bounds)

The adapter follows the checkpoint's format: PPO (`flexrl.ppo/1`, and the zoo's safetensors)
gives `PPOActor`, a finetune policy file (`flexrl.bc/1`, `flexrl.dt/1`) `BCActor` or `DTActor`
(flexrl.offline.actors). A new policy kind gets a branch in `load_policy_source`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexrl.config import EnvConfig, TrainRecipe
from flexrl.errors import FlexrlError
from flexrl.fileio import sha256_file
from flexrl.rollout.actors import Actor, PPOActor, RandomActor
from flexrl.workspace import Artifact, ArtifactKind, RunRecord, Workspace

if TYPE_CHECKING:
    import gymnasium as gym

RANDOM = "random"
ActorFactory = Callable[["gym.spaces.Box", float, bool], Actor]  # (space, noise, stochastic)


@dataclass
class PolicySource:
    """A policy to roll out, where it came from, and the env it was trained in."""

    kind: str  # "ppo", "bc", "dt" or "random"
    name: str  # the source run's name, else the recipe's (zoo-NAME for a shipped policy)
    make_actor: ActorFactory  # (action space, noise, stochastic) -> a fresh actor
    checkpoint: Path | None = None  # None: random
    artifact: Artifact | None = None  # the checkpoint as lineage records it (digest included)
    env: EnvConfig | None = None  # None: random, which acts in any env with bounded actions
    obs_dim: int | None = None  # the observations the policy takes (None: any)
    run: RunRecord | None = None  # the run SOURCE named, if it was a run
    global_step: int | None = None  # env steps of training behind the checkpoint
    target_return: float | None = None  # DT only: the return its actors are conditioned on
    # BC/DT trained on instructions: command -> the text that meant it, for actors made after
    # it is filled (flexrl eval --instruction); other commands are said in words
    told: dict[tuple[float, ...], str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """What the policy is recorded as in every episode it acts in."""
        return self.artifact.digest if self.artifact and self.artifact.digest else RANDOM


def resolve_source(workspace: Workspace, source: str) -> tuple[Path, Artifact, RunRecord | None]:
    """SOURCE as a checkpoint file, a run (id, unique prefix, name) and its newest checkpoint,
    or a shipped policy. Reads no checkpoint and imports nothing heavy, so bad input fails
    fast."""
    from flexrl import zoo

    if zoo.is_zoo_ref(source):
        path = zoo.zoo_path(source)
        artifact = Artifact(
            kind=ArtifactKind.CHECKPOINT,
            ref=source,
            digest=sha256_file(path),
            size=path.stat().st_size,
        )
        return path, artifact, None
    path = Path(source)
    if path.is_file():
        return path, workspace.file_artifact(path, ArtifactKind.CHECKPOINT), None
    if path.suffix in (".pt", ".ckpt") or "/" in source or os.sep in source:
        raise FlexrlError(f"checkpoint not found: {source}")
    try:
        record = workspace.resolve_run(source)
    except FlexrlError as e:
        if str(e).startswith("unknown run"):
            raise FlexrlError(
                f"{source!r} is neither a checkpoint file nor a run in {workspace.root} "
                "(see `flexrl runs ls`)"
            ) from None
        raise
    if record.kind.startswith("finetune"):
        from flexrl.offline.checkpoint import run_policy_file

        checkpoint, artifact = run_policy_file(workspace, record)
    else:
        from flexrl.rl.checkpoint import run_checkpoint

        checkpoint, artifact = run_checkpoint(workspace, record)
    return checkpoint, artifact, record


def random_source() -> PolicySource:
    return PolicySource(RANDOM, RANDOM, make_actor=lambda space, _n, _s: RandomActor(space))


def load_policy_source(
    workspace: Workspace, source: str, target_return: float | None = None
) -> PolicySource:
    """Resolve SOURCE and load its policy (see the module docstring). The DT is conditioned on
    `target_return` (default: its recipe's, else the best training return)."""
    if source == RANDOM:
        if target_return is not None:
            raise FlexrlError("--target-return applies to Decision Transformer policies only")
        return random_source()
    path, artifact, record = resolve_source(workspace, source)
    import torch

    from flexrl.offline.checkpoint import is_offline_checkpoint

    data: Any = None
    if path.suffix != ".safetensors":  # a shipped policy is PPO's, read below
        try:  # one safe read to learn the format; the loaders below check the rest
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch's unpickling errors span many lines; the CLI shows one
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FlexrlError(f"{path}: not a readable checkpoint ({first})") from None
    artifact = artifact.model_copy(update={"role": "policy"})
    if data is not None and is_offline_checkpoint(data):
        return _offline_source(path, artifact, record, data, target_return)
    if target_return is not None:
        raise FlexrlError("--target-return applies to Decision Transformer policies only")
    from flexrl.rl.checkpoint import load_checkpoint, load_policy

    checkpoint = load_checkpoint(path)
    recipe = TrainRecipe.model_validate(checkpoint["recipe"])
    policy = load_policy(path)
    zoo_ref = source.startswith("zoo:")  # named as zoo-NAME (a run name has no colon)
    return PolicySource(
        kind="ppo",
        name=record.name if record else source.replace(":", "-") if zoo_ref else recipe.name,
        make_actor=lambda space, noise, stochastic: PPOActor(policy, space, noise, stochastic),
        checkpoint=path,
        artifact=artifact,
        env=recipe.env,
        obs_dim=int(checkpoint["obs_dim"]),
        run=record,
        global_step=int(checkpoint.get("global_step", 0)),
    )


def _offline_source(
    path: Path,
    artifact: Artifact,
    record: RunRecord | None,
    data: dict[str, Any],
    target_return: float | None,
) -> PolicySource:
    """A BC or DT policy file: deterministic actors, evaluated in the env its data came from."""
    from flexrl.offline.actors import BCActor, DTActor

    kind = data["kind"]
    if data.get("env") is None:
        raise FlexrlError(
            f"{path}: the policy records no environment (its dataset was not collected by "
            "flexrl); set env in its finetune recipe"
        )
    if kind == "bc" and target_return is not None:
        raise FlexrlError("--target-return applies to Decision Transformer policies only")
    if kind == "dt" and target_return is None:
        target_return = float(data["target_return"])

    told: dict[tuple[float, ...], str] = {}

    def make_actor(space: gym.spaces.Box, noise: float, stochastic: bool) -> Actor:
        # deterministic by nature (collect refuses --noise and --stochastic for them)
        return DTActor(data, target_return, told) if kind == "dt" else BCActor(data, told)

    return PolicySource(
        kind=kind,
        name=record.name if record else str(data["recipe"].get("name", kind)),
        make_actor=make_actor,
        checkpoint=path,
        artifact=artifact,
        env=EnvConfig.model_validate(data["env"]),
        obs_dim=int(data["dataset"]["obs_dim"]),
        run=record,
        global_step=int(data.get("global_step", 0)),
        target_return=target_return,
        told=told,
    )
