"""A collection request checked into a plan: names, counts, seed, policy, env and the dataset's
schema, all before a run or a shard exists (bad input: one line, exit 2, nothing written)."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flexrl.config import TASKS, EnvConfig
from flexrl.errors import FlexrlError
from flexrl.rollout.sources import RANDOM, load_policy_source
from flexrl.store import ShardWriter, open_dataset
from flexrl.store.recording import check_dataset_name
from flexrl.workspace import Artifact, ArtifactKind, RunRecord, Workspace

DEFAULT_TASK = "walk_forward"
# Every seed (SEED + k, SEED + worker) must fit 32 bits: PYTHONHASHSEED, which seed_everything
# passes to the spawned workers, takes nothing larger. Drawn seeds leave 2**31 episodes of room.
MAX_SEED = 2**32 - 1
DRAWN_SEED_BOUND = 2**31


class CollectSettings(BaseModel):
    """Everything that decides what a collection writes (recorded as the run's recipe.yaml)."""

    model_config = ConfigDict(extra="forbid")

    policy: str  # RUN, a checkpoint path, or "random"
    dataset: str
    episodes: int = Field(ge=1)
    seed: int = Field(0, ge=0)
    env: EnvConfig
    noise: float = Field(0.0, ge=0)
    stochastic: bool = False
    workers: int = Field(1, ge=1)
    num_envs: int = Field(8, ge=1)
    allow_nonfinite: bool = False  # store NaN/inf steps instead of refusing them
    float64: bool = False  # keep float64 arrays (default: stored as float32)
    # --instructions: (text, the command it means); episode k is told instructions[k % n]
    instructions: list[tuple[str, tuple[float, float, float]]] | None = None


@dataclass(frozen=True)
class CollectRequest:
    """What the user asked for (the CLI's options), before anything is resolved."""

    policy: str
    dataset: str
    episodes: int
    task: str | None = None
    env_id: str | None = None
    command: tuple[float, float, float] | None = None  # the goal task held at this command
    # (text, command) pairs: each episode is told one, in turn (flexrl/language/parser.py)
    instructions: list[tuple[str, tuple[float, float, float]]] | None = None
    workers: int = 1
    seed: int | None = None  # None: draw a fresh one (see the module docstring)
    noise: float = 0.0
    stochastic: bool = False
    num_envs: int = 8
    allow_nonfinite: bool = False
    float64: bool = False


@dataclass
class CollectPlan:
    """A checked request: the resolved env and policy, and the run's lineage inputs."""

    settings: CollectSettings
    workspace: Path
    checkpoint: Path | None  # None for the random policy
    policy_id: str  # the checkpoint digest, or "random"
    humanoid: bool
    inputs: list[Artifact] = field(default_factory=list)
    source_run: RunRecord | None = None


def collection_env(
    base: EnvConfig | None,
    task: str | None,
    env_id: str | None,
    command: tuple[float, float, float] | None = None,
) -> EnvConfig:
    """The env to collect in: the policy's training env, unless --task, --env-id or --command
    says."""
    if task is not None and env_id is not None:
        raise FlexrlError("--task and --env-id exclude each other: give one")
    if command is not None:
        if env_id is not None:
            raise FlexrlError("--command and --env-id exclude each other: give one")
        base = base if base is not None else EnvConfig(task=DEFAULT_TASK)
        from flexrl.envs.tasks import at_command

        return EnvConfig.model_validate(at_command(base, [command], task).model_dump())
    if task is not None and task not in TASKS:
        raise FlexrlError(f"--task: unknown task {task!r}; expected one of {', '.join(TASKS)}")
    env = base.model_copy(deep=True) if base is not None else EnvConfig(task=DEFAULT_TASK)
    if task is not None:  # one forced task: no multi-task sampling, no plain gymnasium id
        env = env.model_copy(update={"task": task, "task_weights": {}, "id": None})
    elif env_id is not None:
        env = env.model_copy(update={"id": env_id, "task_weights": {}})
    return EnvConfig.model_validate(env.model_dump())


def plan_collection(workspace: Workspace, request: CollectRequest) -> CollectPlan:
    """Check the request (names, counts, policy, env, dataset schema); write nothing."""
    check_dataset_name(request.dataset, "--dataset")
    if request.episodes < 1:
        raise FlexrlError(f"--episodes must be at least 1, got {request.episodes}")
    if request.workers < 1 or request.num_envs < 1:
        raise FlexrlError("--workers and --num-envs must be at least 1")
    seed = secrets.randbelow(DRAWN_SEED_BOUND) if request.seed is None else request.seed
    if not 0 <= seed <= MAX_SEED - request.episodes:
        raise FlexrlError(
            f"--seed must be between 0 and {MAX_SEED - request.episodes} "
            f"(episode k resets with SEED + k, which must fit 32 bits), got {seed}"
        )
    if not (math.isfinite(request.noise) and request.noise >= 0):
        raise FlexrlError(f"--noise must be a finite number >= 0, got {request.noise}")
    if request.noise > 0 and request.stochastic:
        raise FlexrlError("--noise and --stochastic exclude each other: give one")
    try:
        source = load_policy_source(workspace, request.policy)
    except FlexrlError as e:
        raise FlexrlError(f"--policy: {e}") from None
    if source.kind != "ppo" and (request.noise > 0 or request.stochastic):
        what = "'random'" if source.kind == RANDOM else f"a {source.kind.upper()} policy"
        raise FlexrlError(f"--noise and --stochastic apply to a PPO policy, not {what}")
    inputs: list[Artifact] = []
    if source.artifact is not None:
        inputs.append(source.artifact)
    if source.run is not None:
        inputs.append(Artifact(kind=ArtifactKind.RUN, ref=source.run.id, role="source"))
    command = request.command
    if request.instructions:
        if command is not None:
            raise FlexrlError("--command and --instructions exclude each other: give one")
        command = request.instructions[0][1]  # the goal task; each episode gets its own
    env_cfg = collection_env(source.env, request.task, request.env_id, command)

    from flexrl.rollout.slots import probe_env

    observation_shape, observation_dtype, bounded = probe_env(env_cfg)
    if source.obs_dim is not None and observation_shape != (source.obs_dim,):
        raise FlexrlError(
            f"the policy takes {source.obs_dim} observations, env {env_name(env_cfg)} gives "
            f"{observation_shape}"
        )
    if source.kind == RANDOM and not bounded:
        raise FlexrlError(f"--policy random needs a bounded action space ({env_name(env_cfg)})")
    existing = ShardWriter(request.dataset, workspace.root).schema  # reads, writes nothing
    if existing is not None and tuple(existing.observations.shape) != observation_shape:
        raise FlexrlError(
            f"dataset {request.dataset!r} holds observations of shape "
            f"{tuple(existing.observations.shape)}; env {env_name(env_cfg)} gives "
            f"{observation_shape}: collect into a new dataset"
        )
    if existing is not None:
        # float64 observations are stored as float32 unless --float64, or the dataset holds
        # float64 (ShardWriter(float32=True)); anything else would not fit its schema
        stored = np.dtype(existing.observations.dtype)
        narrowed = observation_dtype == np.float64 and not request.float64 and stored != np.float64
        if (np.float32 if narrowed else observation_dtype) != stored:
            raise FlexrlError(
                f"dataset {request.dataset!r} stores observations as {stored.name}; this "
                f"collection gives {observation_dtype.name}"
                + (" (--float64)" if request.float64 else "")
                + ": collect into a new dataset"
            )
    settings = CollectSettings(
        policy=request.policy,
        dataset=request.dataset,
        episodes=request.episodes,
        seed=seed,
        env=env_cfg,
        noise=request.noise,
        stochastic=request.stochastic,
        # More workers than episodes would only start idle processes.
        workers=min(request.workers, request.episodes),
        num_envs=request.num_envs,
        allow_nonfinite=request.allow_nonfinite,
        float64=request.float64,
        instructions=request.instructions,
    )
    return CollectPlan(
        settings=settings,
        workspace=workspace.root,
        checkpoint=source.checkpoint,
        policy_id=source.digest,
        humanoid=env_cfg.id is None,
        inputs=inputs,
        source_run=source.run,
    )


def dataset_env(
    workspace: str | Path, dataset: str, _seen: frozenset = frozenset()
) -> dict[str, Any] | None:
    """The env of the run that collected `dataset` (its recipe's `env`), for evaluation and for
    Minari's env spec; for a dataset derived from another (`data relabel`), its source's. None
    when the data came from elsewhere (an import) or that run is gone."""
    import yaml

    manifest = open_dataset(dataset, workspace).manifest
    producers = [manifest.lineage.producer_run] + [s.lineage.producer_run for s in manifest.shards]
    ws = Workspace(workspace)
    for run_id in dict.fromkeys(p for p in producers if p and p not in _seen):
        try:
            raw = yaml.safe_load((ws.run_dir(run_id) / "recipe.yaml").read_text(encoding="utf-8"))
            return EnvConfig.model_validate(raw["env"]).model_dump(mode="json")
        except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
            pass
        try:  # a derived dataset: the env of the data it was made from
            sources = [a.ref for a in ws.load_run(run_id).inputs if a.role == "source"]
        except FlexrlError:
            continue
        for ref in sources:
            try:
                env = dataset_env(workspace, ref, _seen | {run_id})
            except FlexrlError:  # the source is gone
                continue
            if env is not None:
                return env
    return None


def env_name(env: EnvConfig) -> str:
    return env.id if env.id is not None else f"Humanoid task {env.task}"
