"""Evaluation: roll a policy out in the environment it was trained for; metrics and a video,
recorded as a run of kind "eval".

Episodes run through the rollout loop (flexrl.rollout): `num_envs` envs in lockstep, one
batched policy call per step, the physics of Humanoid skills on every core. Metrics per task
(flexrl.rollout.metrics.TaskMetrics): mean and std of the return, mean episode length, fall
rate (episodes that terminated before the time limit: a fall for Humanoid, whatever ends an
episode early elsewhere), and for Humanoid skills the tracking errors, forward speed, distance
along the command and angle turned.

Reproducible: episode i of every task resets with the i-th seed drawn from
`SeedSequence(seed)`, and a stochastic policy samples from the episode's own generator, so the
same seed and `num_envs` (on the same machine) give the same numbers, deterministic or not.
Batched float32 inference can differ in the last bit with the batch size, and a Humanoid's fall
can hang on that bit, so another `num_envs` may give a slightly different episode.

Video: the first episode (first task, first seed), rendered offscreen as it is evaluated
(flexrl.rollout.video), so the video shows the episode the metrics saw; `use_offscreen_gl()`
must run before anything imports mujoco.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flexrl.config import TASKS, EnvConfig
from flexrl.errors import FlexrlError
from flexrl.fileio import atomic_write_json
from flexrl.rollout.metrics import EpisodeResult, TaskMetrics
from flexrl.rollout.sources import PolicySource
from flexrl.rollout.video import VIDEO_STEPS, VideoResult
from flexrl.store import Episode
from flexrl.workspace import Artifact, ArtifactKind, Workspace

DEFAULT_NUM_ENVS = 32  # envs stepped together (at most one per episode)
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


# -- reports ------------------------------------------------------------------------------------


@dataclass
class EvalSettings:
    episodes: int = 10
    tasks: list[str] = field(default_factory=list)
    deterministic: bool = True
    seed: int = 0
    command: list[float] | None = None  # the goal task held at this [vx, vy, yaw_rate]
    num_envs: int = DEFAULT_NUM_ENVS
    # `--instruction`: given in turn over each episode, `instruction_steps` steps each (the
    # goal task's command schedule holds what they mean); each episode gets feedback per one
    instructions: list[str] | None = None
    instruction_steps: int | None = None


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
        judged = [f for e in self.episodes for f in e.feedback or []]
        if judged:
            out["instruction_success"] = float(np.mean([f["success"] for f in judged]))
            out["instruction_similarity"] = float(np.mean([f["similarity"] for f in judged]))
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


def evaluate(
    source: PolicySource,
    settings: EvalSettings,
    progress: bool = True,
    video: Path | None = None,
    video_steps: int = VIDEO_STEPS,
) -> tuple[EvalReport, VideoResult | None]:
    """`settings.episodes` episodes of every task in `settings.tasks`, seeded; with `video`,
    the first one (first task, first seed) is rendered as it runs, for `video_steps` steps."""
    from flexrl.rollout.loop import EpisodeSpec, rollout
    from flexrl.rollout.progress import EpisodeProgress
    from flexrl.rollout.slots import EnvSlots
    from flexrl.rollout.video import EpisodeVideo
    from flexrl.seeding import seed_everything

    assert source.env is not None, "evaluation needs the policy's env"
    seed_everything(settings.seed, torch_threads=1)  # one small MLP: threads only cost here
    seeds = episode_seeds(settings.seed, settings.episodes)
    specs = [
        EpisodeSpec(len(seeds) * t + i, seed, task)
        for t, task in enumerate(settings.tasks)
        for i, seed in enumerate(seeds)
    ]
    num_envs = min(settings.num_envs, len(specs))
    slots = EnvSlots(source.env, num_envs, render_mode="rgb_array" if video else None)
    results: list[EpisodeResult | None] = [None] * len(specs)
    shown = None
    try:
        actor = source.make_actor(slots.action_space, 0.0, not settings.deterministic)
        with (
            EpisodeProgress(len(specs), "eval", progress) as bar,
            EpisodeVideo(slots.envs[0], video, video_steps + 1, progress=progress)
            if video
            else nullcontext() as recorder,
        ):

            def on_step(episodes: list[int | None]) -> None:
                if recorder is not None and episodes[0] == 0:  # slot 0 starts with episode 0
                    recorder.frame()

            for rolled in rollout(slots, actor, specs, on_step=on_step):
                index = rolled.episode.index
                results[index] = rolled.result
                rolled.result.task = specs[index].task or ""
                if settings.instructions:
                    rolled.result.feedback = instruction_feedback(
                        rolled.episode, settings, slots.envs[0].unwrapped.dt
                    )
                bar.advance(rolled.result.length, rolled.result.episode_return)
                if index == 0 and recorder is not None:
                    shown = float(np.sum(rolled.episode.rewards[: recorder.frames - 1]))
    finally:
        slots.close()
    done = [r for r in results if r is not None]
    metrics = [
        TaskMetrics.from_episodes(task, [r for r in done if r.task == task])
        for task in settings.tasks
    ]
    clip = recorder.result(shown) if recorder is not None and shown is not None else None
    return EvalReport(settings, metrics, done), clip


def instruction_feedback(episode: Episode, settings: EvalSettings, dt: float) -> list[dict]:
    """Feedback on each instruction's stretch of the episode (those it never reached: none)."""
    from flexrl.language.feedback import judge, motion_of

    instructions, steps = settings.instructions or [], settings.instruction_steps
    lin_vel, yaw_rate, goals = episode.infos["lin_vel"], episode.infos["yaw_rate"], episode.goals
    assert goals is not None and steps is not None
    out = []
    for k, text in enumerate(instructions):
        start = k * steps
        end = episode.length if k == len(instructions) - 1 else min((k + 1) * steps, episode.length)
        if start >= end:
            break
        fell = bool(episode.terminations[-1]) and end == episode.length
        s = slice(start, end)
        motion = motion_of(lin_vel[s], yaw_rate[s], goals[s], fell, dt)
        out.append(judge(text, motion).as_json())
    return out


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
        report, clip = evaluate(source, settings, progress, video, video_steps)
        outcome = EvalOutcome(run.id, source, report, clip)
        path = run.artifacts_dir / EVAL_FILE
        atomic_write_json(path, outcome.to_json())
        run.add_artifact(path, ArtifactKind.FILE, role="metrics")
        if outcome.video is not None:
            run.add_artifact(outcome.video.path, ArtifactKind.FILE, role="video")
        run.log_metrics(source.global_step or 0, report.summary())
    return outcome
