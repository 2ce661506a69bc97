"""Evaluation: roll a policy out in the environment it was trained for; metrics and a video.

The rollout loop knows nothing about the policy behind it. It talks to an `Actor`:

    class Actor(Protocol):
        def reset(self) -> None: ...                         # a new episode starts
        def act(self, obs, info) -> np.ndarray: ...          # the action for this observation
        def observe(self, reward, info) -> None: ...         # what the last action earned

`info` is the env's info for the step that produced `obs` (the reset info first), so a
goal-conditioned actor reads `info["goal"]` and `info["task_id"]` there. `PPOActor` adapts a
PPO `Policy` (stateless: reset and observe do nothing). The offline policies of issue 5 plug in
without touching the loop: a BC actor is as stateless as PPO; a Decision Transformer actor
clears its context and sets its return-to-go to the target return in `reset`, appends
(return-to-go, state, goal) in `act`, and decrements the return-to-go by the reward in
`observe`. `load_policy_source` picks the adapter from the checkpoint's format; new formats get
a branch there.

Metrics, per task (`TaskMetrics`): mean and std of the return, mean episode length, fall rate
(the share of episodes that terminated before the time limit: a fall for Humanoid, whatever ends
an episode early elsewhere), and for Humanoid skills the velocity tracking error (per-step norm
of heading-frame [vx, vy] minus the goal's, averaged over the episode, then over episodes) and
the yaw-rate tracking error (|yaw_rate - goal yaw rate|, averaged likewise).

Reproducible: episode i of every task resets with the i-th seed drawn from
`SeedSequence(seed)`, and Python, numpy and torch are seeded with `seed`, so the same seed (on
the same machine) gives the same numbers, deterministic or stochastic.

Video: MuJoCo picks its GL backend once, when it is first imported. `use_offscreen_gl()` sets
MUJOCO_GL=egl (unless the user chose one) and must run before anything imports mujoco; this
module imports mujoco, gymnasium's MuJoCo envs and torch only inside functions for that reason.
`check_gl()` then opens a context so a machine without GL fails at once with one line saying
what to install, before any episode is run.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, get_args

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from flexrl.config import EnvConfig, Task, TrainRecipe
from flexrl.errors import FlexrlError
from flexrl.fileio import atomic_write_json, sha256_file
from flexrl.workspace import Artifact, ArtifactKind, RunRecord, Workspace

if TYPE_CHECKING:
    import gymnasium as gym

    from flexrl.rl.agent import Policy

TASKS: tuple[Task, ...] = get_args(Task)  # as flexrl.envs.TASKS, without importing mujoco
VIDEO_SIZE = (320, 240)  # width, height: Mesa's software EGL renders this at ~7-17 frames/s
VIDEO_STEPS = 200  # frames of the video episode, at most (3 s of Humanoid)
# TaskMetrics field -> run metric "eval_<name>" (eval_return is what `runs ls` shows first)
SUMMARY_KEYS = (
    ("return_mean", "return"),
    ("return_std", "return_std"),
    ("length_mean", "length"),
    ("fall_rate", "fall_rate"),
    ("lin_vel_error", "lin_vel_error"),
    ("yaw_rate_error", "yaw_rate_error"),
    ("forward_speed", "forward_speed"),
    ("distance", "distance"),
    ("turned", "turned"),
)


# -- actors ----------------------------------------------------------------------------------


class Actor(Protocol):
    """What the rollout loop needs from a policy (see the module docstring)."""

    def reset(self) -> None:
        """A new episode starts: forget per-episode state."""

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The action for `obs`; `info` is the env's info for the step that produced it."""
        ...

    def observe(self, reward: float, info: dict[str, Any]) -> None:
        """The reward (and info) the last action earned."""


class PPOActor:
    """A PPO `Policy` as an Actor: the Gaussian mean (deterministic) or a sample."""

    def __init__(self, policy: Policy, deterministic: bool = True) -> None:
        self.policy = policy
        self.deterministic = deterministic

    def reset(self) -> None:
        pass  # an MLP on the current observation has no episode state

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        return self.policy.act(obs, deterministic=self.deterministic)

    def observe(self, reward: float, info: dict[str, Any]) -> None:
        pass


# -- what is evaluated -------------------------------------------------------------------------


@dataclass
class PolicySource:
    """A policy checkpoint to evaluate, where it came from, and the env it was trained in."""

    kind: str  # "ppo", "bc" or "dt"
    checkpoint: Path
    artifact: Artifact  # the checkpoint as lineage records it (digest included)
    env: EnvConfig
    name: str  # the source run's name, else the recipe's
    make_actor: Callable[[bool], Actor]  # deterministic -> a fresh actor
    run: RunRecord | None = None  # the run SOURCE named, if it was a run
    global_step: int | None = None  # env steps of training behind the checkpoint
    target_return: float | None = None  # DT only: the return its actors are conditioned on


def resolve_source(workspace: Workspace, source: str) -> tuple[Path, Artifact, RunRecord | None]:
    """SOURCE as a checkpoint file, a run (id, unique prefix, name) and its newest checkpoint,
    or a shipped policy.

    `zoo:NAME` is a shipped policy (flexrl.zoo). Reads no checkpoint and imports nothing
    heavy, so bad input fails fast.
    """
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


def load_policy_source(
    workspace: Workspace, source: str, target_return: float | None = None
) -> PolicySource:
    """Resolve SOURCE and load its policy; the adapter is chosen by the checkpoint's format:
    PPO (`flexrl.ppo/1`) or a finetune policy file (`flexrl.bc/1`, `flexrl.dt/1`). The DT is
    conditioned on `target_return` (default: its recipe's, else the best training return)."""
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
        checkpoint=path,
        artifact=artifact,
        env=recipe.env,
        name=record.name if record else source.replace(":", "-") if zoo_ref else recipe.name,
        make_actor=lambda deterministic: PPOActor(policy, deterministic),
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

    def make_actor(deterministic: bool) -> Actor:
        return DTActor(data, target_return) if kind == "dt" else BCActor(data)

    return PolicySource(
        kind=kind,
        checkpoint=path,
        artifact=artifact,
        env=EnvConfig.model_validate(data["env"]),
        name=record.name if record else str(data["recipe"].get("name", kind)),
        make_actor=make_actor,
        run=record,
        global_step=int(data.get("global_step", 0)),
        target_return=target_return,
    )


def is_humanoid(env: EnvConfig) -> bool:
    return env.id is None


def default_tasks(env: EnvConfig) -> list[str]:
    """What the policy was trained on: every weighted task, else `env.task`; a gymnasium id is
    one "task"."""
    if env.id is not None:
        return [env.id]
    weighted = [t for t in TASKS if env.task_weights.get(t, 0.0) > 0]
    return weighted or [env.task]


def select_tasks(env: EnvConfig, task: str | None) -> list[str]:
    if task is None:
        return default_tasks(env)
    if env.id is not None:
        if task == env.id:
            return [task]
        raise FlexrlError(f"--task {task}: the policy acts in {env.id}, which has no tasks")
    if task not in TASKS:
        raise FlexrlError(f"--task: unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return [task]


# -- rollouts ------------------------------------------------------------------------------------


@dataclass
class EpisodeResult:
    task: str
    seed: int
    episode_return: float
    length: int
    terminated: bool  # ended before the time limit (a fall, for Humanoid)
    lin_vel_error: float | None = None  # mean over steps of |lin_vel - goal[:2]|
    yaw_rate_error: float | None = None  # mean over steps of |yaw_rate - goal[2]|
    forward_speed: float | None = None  # mean over steps of lin_vel[0] (heading frame, m/s)
    # metres the torso moved along the commanded direction, from its positions (a cross-check
    # of the velocities); None where the command never asked for motion (turning on the spot)
    distance: float | None = None
    # radians the torso's heading turned in the commanded direction, from its orientations
    # (a cross-check of the yaw rates); None where no turn was ever commanded
    turned: float | None = None


@dataclass
class TaskMetrics:
    task: str
    episodes: int
    return_mean: float
    return_std: float
    length_mean: float
    fall_rate: float
    lin_vel_error: float | None = None
    yaw_rate_error: float | None = None
    forward_speed: float | None = None
    distance: float | None = None  # mean over episodes
    turned: float | None = None  # mean over episodes

    @classmethod
    def from_episodes(cls, task: str, results: list[EpisodeResult]) -> TaskMetrics:
        returns = np.array([r.episode_return for r in results])

        def mean_of(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return float(np.mean(known)) if known else None

        return cls(
            task=task,
            episodes=len(results),
            return_mean=float(returns.mean()),
            return_std=float(returns.std()),
            length_mean=float(np.mean([r.length for r in results])),
            fall_rate=float(np.mean([r.terminated for r in results])),
            lin_vel_error=mean_of([r.lin_vel_error for r in results]),
            yaw_rate_error=mean_of([r.yaw_rate_error for r in results]),
            forward_speed=mean_of([r.forward_speed for r in results]),
            distance=mean_of([r.distance for r in results]),
            turned=mean_of([r.turned for r in results]),
        )


@dataclass
class EvalSettings:
    episodes: int = 10
    tasks: list[str] = field(default_factory=list)
    deterministic: bool = True
    seed: int = 0
    command: list[float] | None = None  # the goal task held at this [vx, vy, yaw_rate]


@dataclass
class EvalReport:
    settings: EvalSettings
    tasks: list[TaskMetrics]
    episodes: list[EpisodeResult]

    def summary(self) -> dict[str, float]:
        """Flat metrics for the run record: task means averaged over tasks (`eval_return`
        first, the key `runs ls` shows), then per-task values when there are several."""

        def over_tasks(key: str) -> list[float]:
            return [v for t in self.tasks if (v := getattr(t, key)) is not None]

        out = {
            f"eval_{name}": float(np.mean(values))
            for key, name in SUMMARY_KEYS
            if (values := over_tasks(key))
        }
        if len(self.tasks) > 1:
            for t in self.tasks:
                out[f"eval_return/{t.task}"] = t.return_mean
                out[f"eval_fall_rate/{t.task}"] = t.fall_rate
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "summary": self.summary(),
            "tasks": {
                t.task: {k: v for k, v in asdict(t).items() if k != "task"} for t in self.tasks
            },
            "episodes": [asdict(e) for e in self.episodes],
        }


def episode_seeds(seed: int, episodes: int) -> list[int]:
    """Independent reset seeds (seed 1's episodes are not seed 0's shifted by one)."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(episodes)]


def run_episode(
    env: gym.Env,
    actor: Actor,
    seed: int,
    task: str | None = None,
    max_steps: int | None = None,
    on_step: Callable[[], None] | None = None,
) -> EpisodeResult:
    """One episode from `env.reset(seed=seed)`; `task` forces a Humanoid skill. `on_step` runs
    after the reset and after every step (the video renders a frame there)."""
    obs, info = env.reset(seed=seed, options={"task": task} if task in TASKS else None)
    actor.reset()
    if on_step is not None:
        on_step()
    total, length, terminated = 0.0, 0, False
    lin_errors: list[float] = []
    yaw_errors: list[float] = []
    speeds: list[float] = []
    distance: float | None = None
    turned: float | None = None
    while max_steps is None or length < max_steps:
        action = actor.act(obs, info)
        before = info
        obs, reward, terminated, truncated, info = env.step(action)
        actor.observe(float(reward), info)
        total += float(reward)
        length += 1
        if "goal" in info and "lin_vel" in info:  # Humanoid skills measure their tracking
            goal = np.asarray(info["goal"])
            lin_errors.append(float(np.linalg.norm(np.asarray(info["lin_vel"]) - goal[:2])))
            yaw_errors.append(abs(float(info["yaw_rate"]) - float(goal[2])))
            speeds.append(float(np.asarray(info["lin_vel"])[0]))
            step_distance = distance_along_command(before, info)
            if step_distance is not None:
                distance = (distance or 0.0) + step_distance
            step_turn = turn_toward_command(before, info)
            if step_turn is not None:
                turned = (turned or 0.0) + step_turn
        if on_step is not None:
            on_step()
        if terminated or truncated:
            break
    return EpisodeResult(
        task=task if task is not None else "",
        seed=seed,
        episode_return=total,
        length=length,
        terminated=bool(terminated),
        lin_vel_error=float(np.mean(lin_errors)) if lin_errors else None,
        yaw_rate_error=float(np.mean(yaw_errors)) if yaw_errors else None,
        forward_speed=float(np.mean(speeds)) if speeds else None,
        distance=distance,
        turned=turned,
    )


def distance_along_command(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    """Metres the torso moved in one step along the commanded velocity's direction, which is
    given in the heading frame of the step's start; None when no motion was commanded (or the
    env reports no positions)."""
    if "xy" not in before or "xy" not in after:
        return None
    command = np.asarray(after["goal"])[:2]
    speed = float(np.linalg.norm(command))
    if speed < 1e-6:
        return None
    yaw = float(before["heading"])
    c, s = np.cos(yaw), np.sin(yaw)
    direction = np.array([c * command[0] - s * command[1], s * command[0] + c * command[1]])
    moved = np.asarray(after["xy"]) - np.asarray(before["xy"])
    return float(moved @ direction) / speed


def turn_toward_command(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    """Radians the torso's heading turned in one step, signed so that turning the commanded
    way is positive; None when no turn was commanded (or the env reports no heading)."""
    if "heading" not in before or "heading" not in after:
        return None
    command = float(np.asarray(after["goal"])[2])
    if abs(command) < 1e-6:
        return None
    change = float(after["heading"]) - float(before["heading"])
    change = (change + np.pi) % (2 * np.pi) - np.pi  # across the +-pi seam
    return change * np.sign(command)


def make_eval_env(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """One env as the policy saw it in training (flat observations), optionally rendering."""
    import gymnasium as gym

    from flexrl.envs import make_env

    env = make_env(cfg, render_mode=render_mode)
    if not isinstance(env.observation_space, gym.spaces.Box):
        env = gym.wrappers.FlattenObservation(env)
    return env


def evaluate(source: PolicySource, settings: EvalSettings, progress: bool = True) -> EvalReport:
    """`settings.episodes` episodes of every task in `settings.tasks`, seeded."""
    from flexrl.seeding import seed_everything

    seed_everything(settings.seed, torch_threads=1)  # one small MLP: threads only cost here
    env = make_eval_env(source.env)
    actor = source.make_actor(settings.deterministic)
    seeds = episode_seeds(settings.seed, settings.episodes)
    results: list[EpisodeResult] = []
    try:
        total = len(settings.tasks) * len(seeds)
        with _progress("eval", "episodes", progress, total) as advance:
            for task in settings.tasks:
                for seed in seeds:
                    results.append(run_episode(env, actor, seed, task))
                    advance()
    finally:
        env.close()
    metrics = [
        TaskMetrics.from_episodes(task, [r for r in results if r.task == task])
        for task in settings.tasks
    ]
    return EvalReport(settings, metrics, results)


@contextmanager
def _progress(
    label: str, unit: str, enabled: bool, total: int | None = None
) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr with its rate; yields `advance()`."""
    bar = Progress(
        TextColumn(f"[bold]{label}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{unit} · {{task.fields[rate]}}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
    task = bar.add_task(label, total=total, rate="-")
    start = time.monotonic()
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        elapsed = time.monotonic() - start
        bar.update(task, advance=1, rate=f"{done / elapsed:.1f}/s" if elapsed > 0 else "-")

    with bar:
        yield advance


# -- video ---------------------------------------------------------------------------------------

GL_HINTS = {
    "egl": "install EGL and Mesa's drivers (Debian/Ubuntu: apt-get install libegl1 "
    "libgl1-mesa-dri), or render with OSMesa instead: MUJOCO_GL=osmesa and libosmesa6",
    "osmesa": "install OSMesa (Debian/Ubuntu: apt-get install libosmesa6), or render with EGL "
    "instead: MUJOCO_GL=egl and libegl1 libgl1-mesa-dri",
}


def use_offscreen_gl() -> str:
    """Make MuJoCo render offscreen with EGL unless the user chose a backend (MUJOCO_GL).

    MuJoCo reads MUJOCO_GL once, when first imported: call this before anything imports it.
    Returns the backend in effect.
    """
    if "MUJOCO_GL" not in os.environ and "mujoco" not in sys.modules:
        os.environ["MUJOCO_GL"] = "egl"
    return os.environ.get("MUJOCO_GL", "")


def gl_error(exc: BaseException, backend: str) -> FlexrlError:
    """One line for a GL backend that cannot work here, naming what to install."""
    text = " ".join(str(exc).split())
    if isinstance(exc, AttributeError) and "NoneType" in text:
        # PyOpenGL leaves its platform None when dlopen of libEGL/libOSMesa failed
        cause = "its GL library could not be loaded"
    else:
        cause = text.split(". ")[0][:160] or type(exc).__name__
    hint = GL_HINTS.get(
        backend.lower(),
        "an on-screen backend needs a display; unset MUJOCO_GL to render offscreen with EGL "
        "(Debian/Ubuntu: libegl1 libgl1-mesa-dri) or set MUJOCO_GL=osmesa (libosmesa6)",
    )
    return FlexrlError(
        f"--video: cannot render with MUJOCO_GL={backend or '(unset)'} ({cause}); {hint}"
    )


def check_gl(width: int = VIDEO_SIZE[0], height: int = VIDEO_SIZE[1]) -> None:
    """Make a GL context and a MuJoCo render context now, so a machine without GL fails before
    any work is done (GLFW without a display only warns until MuJoCo needs the context)."""
    backend = os.environ.get("MUJOCO_GL", "")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GLFW's warnings repeat what the error says
            import mujoco  # with a broken EGL/OSMesa the import itself fails

            context = mujoco.GLContext(width, height)
            try:
                context.make_current()
                model = mujoco.MjModel.from_xml_string("<mujoco/>")
                mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100).free()
            finally:
                context.free()
    except Exception as e:  # only GL work happens here: any failure means no usable GL
        raise gl_error(e, backend) from None


@dataclass
class VideoResult:
    path: Path
    frames: int
    fps: float  # of the video file
    render_fps: float  # frames rendered, stepped and encoded per second after the first
    episode_return: float  # over the steps shown


def record_video(
    source: PolicySource,
    settings: EvalSettings,
    path: Path,
    max_steps: int = VIDEO_STEPS,
    size: tuple[int, int] = VIDEO_SIZE,
    progress: bool = True,
) -> VideoResult:
    """Render the first evaluated episode (first task, first seed; re-seeded, so it is the
    episode the metrics saw) for at most `max_steps` steps and write it as MP4 with imageio.

    The file appears complete or not at all: frames stream into a temporary file beside
    `path`, renamed into place at the end.
    """
    import imageio.v2 as imageio

    from flexrl.seeding import seed_everything

    seed_everything(settings.seed, torch_threads=1)
    task = settings.tasks[0]
    seed = episode_seeds(settings.seed, 1)[0]
    env = make_eval_env(source.env, render_mode="rgb_array")
    _set_render_size(env, *size)
    fps = float(env.metadata.get("render_fps") or 30)
    actor = source.make_actor(settings.deterministic)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    frames = 0
    start = time.monotonic()
    try:
        writer = imageio.get_writer(
            tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", macro_block_size=8
        )
        try:
            with _progress("video", "frames", progress, max_steps + 1) as advance:

                def on_step() -> None:
                    nonlocal frames, start
                    writer.append_data(env.render())
                    frames += 1
                    if frames == 1:  # the rate leaves out making the GL context and encoder
                        start = time.monotonic()
                    advance()

                result = run_episode(env, actor, seed, task, max_steps, on_step)
        finally:
            writer.close()
        elapsed = time.monotonic() - start
        os.replace(tmp, path)
    finally:
        env.close()
        tmp.unlink(missing_ok=True)
    rate = (frames - 1) / elapsed if frames > 1 and elapsed > 0 else 0.0
    return VideoResult(path.resolve(), frames, fps, rate, result.episode_return)


def _set_render_size(env: gym.Env, width: int, height: int) -> None:
    """Shrink a MuJoCo env's offscreen frame before its first render (gymnasium's default is
    480x480); other envs keep their own size."""
    base = env.unwrapped
    renderer = getattr(base, "mujoco_renderer", None)
    if renderer is None:
        return
    visual = base.model.vis.global_
    visual.offwidth, visual.offheight = max(visual.offwidth, width), max(visual.offheight, height)
    renderer.width, renderer.height = width, height
    base.width, base.height = width, height


# -- the recorded evaluation ---------------------------------------------------------------------

EVAL_FILE = "eval.json"


@dataclass
class EvalOutcome:
    run_id: str
    source: PolicySource
    report: EvalReport
    video: VideoResult | None = None

    def to_json(self) -> dict[str, Any]:
        """What `flexrl eval --json` prints and the run's eval.json holds."""
        env = self.source.env
        report = self.report.to_json()
        if self.source.target_return is not None:  # what a DT's score depends on
            report["settings"]["target_return"] = self.source.target_return
        return {
            "run": self.run_id,
            "source": {
                "kind": self.source.kind,
                "run": self.source.run.id if self.source.run else None,
                "checkpoint": self.source.artifact.ref,
                "digest": self.source.artifact.digest,
                "global_step": self.source.global_step,
            },
            "env": env.id or "humanoid",
            **report,
            "video": None
            if self.video is None
            else {
                "path": str(self.video.path),
                "frames": self.video.frames,
                "fps": self.video.fps,
                "render_fps": round(self.video.render_fps, 2),
                "episode_return": self.video.episode_return,
            },
        }


def evaluate_and_record(
    workspace: Workspace,
    source: PolicySource,
    settings: EvalSettings,
    video: Path | None = None,
    video_steps: int = VIDEO_STEPS,
    progress: bool = True,
) -> EvalOutcome:
    """Evaluate as a run of kind "eval": inputs the checkpoint (role "policy", by digest, which
    joins it to the run that wrote it) and the source run (role "source"); outputs eval.json and
    the video; the summary metrics logged at the checkpoint's training step."""
    inputs = [source.artifact]
    if source.run is not None:
        inputs.append(Artifact(kind=ArtifactKind.RUN, ref=source.run.id, role="source"))
    name = f"eval-{source.name}"[:64]
    with workspace.start_run("eval", name, seed=settings.seed, inputs=inputs) as run:
        report = evaluate(source, settings, progress)
        outcome = EvalOutcome(run.id, source, report)
        if video is not None:
            outcome.video = record_video(source, settings, video, video_steps, progress=progress)
        path = run.artifacts_dir / EVAL_FILE
        atomic_write_json(path, outcome.to_json())
        run.add_artifact(path, ArtifactKind.FILE, role="metrics")
        if outcome.video is not None:
            run.add_artifact(outcome.video.path, ArtifactKind.FILE, role="video")
        run.log_metrics(source.global_step or 0, report.summary())
    return outcome
