"""Collection: roll a policy out and write its episodes into the store as a new dataset version.

    plan = plan_collection(ws, CollectRequest(policy="walk", dataset="walk-expert", episodes=100))
    with ws.start_run("collect", plan.settings.dataset, recipe=plan.settings, ...) as run:
        result = collect(plan, run)

Policies: any rollout source (flexrl.rollout.sources): a PPO run or checkpoint, a shipped
policy `zoo:NAME`, a BC/DT finetune run, or `random` (uniform actions in the action bounds).
A PPO policy acts with its Gaussian mean, plus optional Gaussian noise (`noise`, in action
units, clipped to the bounds), or a sample from its Gaussian (`stochastic`).

Reproducible: episode k (0-based) resets its env with seed `seed + k` and draws its noise (or its
random actions) from its own generator seeded with `[seed + k, 1]`, so an episode's data does not
depend on which env slot or worker ran it, and the same command with the same seed gives the same
arrays. (Batched float32 inference can differ in the last bit with the batch size, so keep
--num-envs for bit-identical policy data.)

Fresh by default: without a seed, one is drawn from OS entropy (as numpy and gymnasium do for
`seed=None`), so two default collections never store the same episodes twice, whether they run
one after the other, concurrently (pods) or into different datasets that are later trained on
together; "continue after the dataset's highest seed" would collide for concurrent writers. The
seed drawn is recorded (run record, recipe.yaml, the version's message, every episode) and
printed, so any collection can be repeated with --seed.

Vectorised: each process runs the rollout loop (flexrl.rollout.loop): `num_envs` envs in
lockstep, one batched policy call per step, a Humanoid's physics on every core. An episode's
final observation (Minari's observations[T]) is the one `step` returned with terminated or
truncated, i.e. exactly what SAME_STEP autoreset would put into `infos["final_obs"]`.

Stored per episode (flexrl.store.recording): seed, task (the Humanoid task's name; none for
plain gymnasium envs), policy (the checkpoint's sha256 digest, or "random"), goals
(`info["goal"]` of each step: the command the step was rewarded against) and the numeric info
keys (Humanoid: lin_vel, yaw_rate, xy, heading and every reward term as `reward_terms.<term>`).

Workers and versions: `workers=W` starts W processes (spawn, one torch thread each); worker w
collects a contiguous block of the episodes and writes its own shards, concurrently. The store's
public API has no way to commit shards that another process wrote, so **each worker commits its
own version**: one collection with W workers creates W versions (consecutive unless another
writer commits in between), the last of which holds every episode of the collection (versions
only ever append). `CollectResult.ref` and the printed summary name that last version.
To keep this close to "one collection, all or nothing", commits are two-phase: every worker
first writes all its shards (invisible to readers), and only when all W are ready does the
parent let them commit, one after the other in worker order (so the episode order in the
dataset is reproducible too).
An interruption before that point (Ctrl-C, SIGTERM, a failing worker) commits nothing and the
workers delete their shards; one during the commit phase (milliseconds) can leave the first
workers' versions committed, and the run's outputs list exactly the versions that exist.
With one worker (the default) everything runs in this process and makes one version.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing as mp
import os
import queue
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flexrl.config import TASKS, EnvConfig
from flexrl.errors import FlexrlError
from flexrl.rollout.progress import EpisodeProgress
from flexrl.rollout.sources import RANDOM, PolicySource, load_policy_source
from flexrl.store import Episode, Lineage, ResolvedVersion, ShardWriter, open_dataset, resolve
from flexrl.store.recording import check_dataset_name
from flexrl.workspace import Artifact, ArtifactKind, Run, RunRecord, Workspace

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


@dataclass(frozen=True)
class CollectRequest:
    """What the user asked for (the CLI's options), before anything is resolved."""

    policy: str
    dataset: str
    episodes: int
    task: str | None = None
    env_id: str | None = None
    command: tuple[float, float, float] | None = None  # the goal task held at this command
    workers: int = 1
    seed: int | None = None  # None: draw a fresh one (see the module docstring)
    noise: float = 0.0
    stochastic: bool = False
    num_envs: int = 8
    allow_nonfinite: bool = False


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


@dataclass
class CollectResult:
    run_id: str
    dataset: str
    seed: int
    versions: list[ResolvedVersion]
    previous: ResolvedVersion | None  # the version this collection appended to; None: new
    episodes: int
    steps: int
    returns: list[float]
    seconds: float

    @property
    def ref(self) -> str | None:
        """The version holding the whole collection (the last one created)."""
        return self.versions[-1].ref if self.versions else None

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "dataset": self.dataset,
            "ref": self.ref,
            "previous": self.previous.ref if self.previous else None,
            "seed": self.seed,
            "versions": [{"ref": v.ref, "digest": v.digest} for v in self.versions],
            "episodes": self.episodes,
            "steps": self.steps,
            "mean_return": self.mean_return,
            "std_return": float(np.std(self.returns)) if self.returns else float("nan"),
            "seconds": round(self.seconds, 3),
        }


# --- planning: check everything before a run or a shard exists -------------------------------


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

        return EnvConfig.model_validate(at_command(base, command, task).model_dump())
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
    env_cfg = collection_env(source.env, request.task, request.env_id, request.command)

    from flexrl.rollout.slots import probe_env

    observation_shape, bounded = probe_env(env_cfg)
    if source.obs_dim is not None and observation_shape != (source.obs_dim,):
        raise FlexrlError(
            f"the policy takes {source.obs_dim} observations, env {_env_name(env_cfg)} gives "
            f"{observation_shape}"
        )
    if source.kind == RANDOM and not bounded:
        raise FlexrlError(f"--policy random needs a bounded action space ({_env_name(env_cfg)})")
    existing = ShardWriter(request.dataset, workspace.root).schema  # reads, writes nothing
    if existing is not None and tuple(existing.observations.shape) != observation_shape:
        raise FlexrlError(
            f"dataset {request.dataset!r} holds observations of shape "
            f"{tuple(existing.observations.shape)}; env {_env_name(env_cfg)} gives "
            f"{observation_shape}: collect into a new dataset"
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


def dataset_env(workspace: str | Path, dataset: str) -> dict[str, Any] | None:
    """The env of the run that collected `dataset` (its recipe's `env`), for evaluation and for
    Minari's env spec; None when the data came from elsewhere (an import) or that run is gone."""
    import yaml

    manifest = open_dataset(dataset, workspace).manifest
    producers = [manifest.lineage.producer_run] + [s.lineage.producer_run for s in manifest.shards]
    ws = Workspace(workspace)
    for run_id in producers:
        if not run_id:
            continue
        try:
            raw = yaml.safe_load((ws.run_dir(run_id) / "recipe.yaml").read_text(encoding="utf-8"))
            return EnvConfig.model_validate(raw["env"]).model_dump(mode="json")
        except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
            continue
    return None


def _env_name(env: EnvConfig) -> str:
    return env.id if env.id is not None else f"Humanoid task {env.task}"


# --- writing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """One process's share of a collection (picklable, sent to spawned workers)."""

    settings: CollectSettings
    workspace: Path
    checkpoint: Path | None
    policy_id: str
    lineage: Lineage
    episode_ids: range
    message: str


def run_episodes(job: _Job) -> Iterator[Episode]:
    """Roll out the job's episodes (episode k resets with seed + k); yield each as it ends."""
    from flexrl.rollout.loop import EpisodeSpec, rollout
    from flexrl.rollout.slots import EnvSlots

    settings = job.settings
    source = _load_source(job)
    specs = [EpisodeSpec(k, settings.seed + k) for k in job.episode_ids]
    slots = EnvSlots(settings.env, min(settings.num_envs, len(specs)))
    try:
        actor = source.make_actor(slots.action_space, settings.noise, settings.stochastic)
        try:
            for rolled in rollout(
                slots,
                actor,
                specs,
                policy=job.policy_id,
                allow_nonfinite=settings.allow_nonfinite,
            ):
                yield rolled.episode
        except FlexrlError as e:
            raise FlexrlError(f"{settings.dataset}, {e}") from None
    finally:
        slots.close()


def _load_source(job: _Job) -> PolicySource:
    """The job's policy, from the checkpoint the plan resolved (a worker re-reads it)."""
    if job.checkpoint is None:
        return load_policy_source(Workspace(job.workspace), RANDOM)
    return load_policy_source(Workspace(job.workspace), str(job.checkpoint))


def _write_episodes(job: _Job, writer: ShardWriter, on_episode: Callable[[Episode], None]) -> None:
    for episode in run_episodes(job):
        writer.add(episode)
        on_episode(episode)


def _shares(episodes: int, workers: int) -> list[range]:
    """Contiguous blocks of episode indices, as equal as possible (disjoint seeds). Ranges,
    not lists: a worker's job is pickled through a pipe, and a million ints would block it."""
    bounds = np.linspace(0, episodes, workers + 1).round().astype(int)
    return [range(int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds)]


def collect(plan: CollectPlan, run: Run, progress: bool = True) -> CollectResult:
    """Roll the plan out and commit it into the store; lineage goes into `run`'s record."""
    from flexrl.seeding import seed_everything
    from flexrl.workspace.provenance import code_version

    code, _diff = code_version()
    settings = plan.settings
    lineage = Lineage(
        producer_run=run.id,
        policy_digest=None if plan.checkpoint is None else plan.policy_id,
        code_version=code.git_commit or code.flexrl_version,
    )
    seed_everything(settings.seed, torch_threads=1)
    shares = _shares(settings.episodes, settings.workers)
    jobs = [
        _Job(
            settings=settings,
            workspace=plan.workspace,
            checkpoint=plan.checkpoint,
            policy_id=plan.policy_id,
            lineage=lineage,
            episode_ids=share,
            message=(
                f"flexrl collect: episodes {share[0]}-{share[-1]} of {settings.episodes}, "
                f"policy {settings.policy}, {_env_name(settings.env)}, seed {settings.seed}"
            ),
        )
        for share in shares
    ]
    versions: list[ResolvedVersion] = []

    def committed(version: int) -> None:
        resolved = resolve(f"{settings.dataset}@v{version}", plan.workspace)
        versions.append(resolved)
        run.add_output(
            Artifact(
                kind=ArtifactKind.DATASET, ref=resolved.ref, digest=resolved.digest, role="data"
            )
        )

    description = f"collect {settings.dataset}"
    with EpisodeProgress(settings.episodes, description, progress) as bar:
        if len(jobs) == 1:
            job = jobs[0]
            with ShardWriter(
                settings.dataset,
                job.workspace,
                lineage=job.lineage,
                message=job.message,
                allow_nonfinite=settings.allow_nonfinite,
            ) as writer:
                _write_episodes(job, writer, lambda ep: bar.advance(ep.length, ep.episode_return))
            for manifest in writer.committed:
                committed(manifest.version)
        else:
            _run_workers(jobs, bar, committed)
    # Versions only append: the one before this collection's first is what it was added to.
    first = versions[0].version if versions else 1
    previous = resolve(f"{settings.dataset}@v{first - 1}", plan.workspace) if first > 1 else None
    result = CollectResult(
        run_id=run.id,
        dataset=settings.dataset,
        seed=settings.seed,
        versions=versions,
        previous=previous,
        episodes=len(bar.returns),
        steps=bar.steps,
        returns=bar.returns,
        seconds=time.monotonic() - bar.t0,
    )
    run.log_metrics(
        result.steps,
        {
            "episodes": result.episodes,
            "steps": result.steps,
            "mean_return": result.mean_return,
            "episodes_per_s": result.episodes / max(result.seconds, 1e-9),
            "steps_per_s": result.steps / max(result.seconds, 1e-9),
        },
    )
    return result


# --- worker processes ------------------------------------------------------------------------


class _Abort(Exception):
    """The parent called the collection off: leave the writer without committing."""


_signalled: list[int] = []  # the worker's first interrupting signal


def _raise_interrupt(signum: int, frame: object) -> None:
    # Unwind once: a second signal (Ctrl-C reaches the workers and the parent's terminate
    # follows) must not interrupt the writer while it deletes its shards.
    if _signalled:
        return
    _signalled.append(signum)
    raise KeyboardInterrupt(f"worker got {signal.Signals(signum).name}")


def _worker(
    worker: int, job: _Job, messages: Any, commit: Any, abort: Any
) -> None:  # pragma: no cover - runs in a spawned process (tested through the CLI)
    """One worker: collect its share, write its shards, wait for the go, commit its version."""
    # SIGTERM (the parent's terminate) unwinds like Ctrl-C: the writer deletes its shards.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        from flexrl.seeding import seed_everything

        seed_everything(job.settings.seed + worker, torch_threads=1)
        with ShardWriter(
            job.settings.dataset,
            job.workspace,
            lineage=job.lineage,
            message=job.message,
            allow_nonfinite=job.settings.allow_nonfinite,
        ) as writer:
            _write_episodes(
                job,
                writer,
                lambda ep: messages.put(("episode", worker, ep.length, ep.episode_return)),
            )
            writer.flush()  # every shard on disk, still invisible
            messages.put(("ready", worker))
            while not commit.wait(0.2):
                if abort.is_set() or os.getppid() == 1:  # called off, or the parent is gone
                    raise _Abort
            if abort.is_set():
                raise _Abort
        versions = [m.version for m in writer.committed]
        messages.put(("committed", worker, versions))
    except (_Abort, KeyboardInterrupt):
        messages.put(("aborted", worker))
    except FlexrlError as e:
        messages.put(("error", worker, str(e), True))
    except BaseException as e:
        messages.put(("error", worker, f"{type(e).__name__}: {e}", False))


def _run_workers(jobs: list[_Job], bar: EpisodeProgress, committed: Callable[[int], None]) -> None:
    """Start one spawned process per job, show their progress, then commit in worker order."""
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    abort = ctx.Event()
    commits = [ctx.Event() for _ in jobs]
    procs = [
        ctx.Process(
            target=_worker,
            args=(w, job, messages, commits[w], abort),
            name=f"flexrl-collect-{w}",
            daemon=True,
        )
        for w, job in enumerate(jobs)
    ]
    started: list[mp.process.BaseProcess] = []
    ready: set[int] = set()
    done: set[int] = set()
    next_commit = 0
    try:
        for proc in procs:
            proc.start()
            started.append(proc)
        while len(done) < len(procs):
            try:
                message = messages.get(timeout=0.2)
            except queue.Empty:
                for w, proc in enumerate(procs):
                    if w not in done and proc.exitcode is not None:
                        # Exited without a last word: killed (OOM, kill -9) or crashed hard.
                        time.sleep(0.5)  # its last message may still be in the pipe
                        if messages.empty():
                            raise FlexrlError(
                                f"collect worker {w} died (exit code {proc.exitcode})"
                            ) from None
                continue
            kind, w = message[0], message[1]
            if kind == "episode":
                bar.advance(message[2], message[3])
            elif kind == "ready":
                ready.add(w)
            elif kind == "committed":
                for version in message[2]:
                    committed(version)
                done.add(w)
                next_commit += 1
            elif kind == "error":
                if message[3]:
                    raise FlexrlError(f"collect worker {w}: {message[2]}")
                raise RuntimeError(f"collect worker {w} failed: {message[2]}")
            elif kind == "aborted":
                raise KeyboardInterrupt(f"collect worker {w} was interrupted")
            # Commit one at a time, in worker order, once every worker has all its shards.
            if len(ready) == len(procs) and next_commit < len(procs):
                commits[next_commit].set()
        for proc in procs:
            proc.join()
    finally:
        abort.set()
        for proc in started:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker deletes its uncommitted shards
        # Keep reading while they exit: a worker blocks at exit until its messages are read.
        deadline = time.monotonic() + 10
        while any(p.is_alive() for p in started) and time.monotonic() < deadline:
            try:
                messages.get(timeout=0.1)
            except Exception:  # empty, or cut short by a killed worker: nothing left to use
                continue
        for proc in started:
            if proc.is_alive():
                proc.kill()
            proc.join()
        messages.close()
