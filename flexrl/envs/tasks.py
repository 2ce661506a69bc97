"""Skills as goal commands: every task is a point (or a distribution) in one goal space.

A goal is [vx, vy, yaw_rate]: forward and leftward speed in the heading frame (m/s) and the
world yaw rate (rad/s, + turns left). Fixed skills are constant goals, so one goal-conditioned
policy can learn them all and a multi-task policy is told explicitly what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flexrl.config import TASKS, CommandConfig, EnvConfig, Task
from flexrl.errors import FlexrlError

GOAL_DIM = 3


def task_id(task: Task) -> int:
    return TASKS.index(task)


def sample_goal(
    task: Task,
    cfg: CommandConfig,
    rng: np.random.Generator,
    span: int = 0,
    progress: float = 1.0,
    training: bool = False,
) -> np.ndarray:
    """The goal for `task`: constant for the fixed skills; for `goal` the schedule's command
    for the episode's `span`-th stretch of `resample_steps` steps, or a uniform draw in the
    ranges, which a curriculum's `progress` (0..1) shrinks towards `cfg.curriculum_start`; in
    `training`, vx comes from the slow end of its range `cfg.train_slow_prob` of the time."""
    if task == "walk_forward":
        return np.array([cfg.walk_speed, 0.0, 0.0])
    if task == "turn_left":
        return np.array([cfg.turn_speed, 0.0, cfg.turn_rate])
    if task == "turn_right":
        return np.array([cfg.turn_speed, 0.0, -cfg.turn_rate])
    if task == "goal" and cfg.schedule:
        return np.array(cfg.schedule[min(span, len(cfg.schedule) - 1)], dtype=np.float64)
    if task == "goal":
        low, high = np.array([cfg.vx_range, cfg.vy_range, cfg.yaw_rate_range]).T
        start = np.array(cfg.curriculum_start)
        low, high = start + progress * (low - start), start + progress * (high - start)
        goal = rng.uniform(low, high)
        if training and cfg.train_slow_prob > 0 and rng.random() < cfg.train_slow_prob:
            goal[0] = rng.uniform(low[0], min(low[0] + cfg.train_slow_width, high[0]))
        if cfg.still_prob > 0 and rng.random() < cfg.still_prob * progress:
            goal[:] = 0.0
        return goal
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def at_command(
    env: EnvConfig,
    commands: Sequence[tuple[float, float, float]],
    task: str | None,
    steps_each: int | None = None,
) -> EnvConfig:
    """`env` in the `goal` task given these commands [vx, vy, yaw_rate] in turn, each for
    `steps_each` steps and the last to the episode's end (one command: whole episodes at it):
    to evaluate or collect at chosen commands, e.g. one inside a dataset's range but not in it,
    or an instruction sequence."""
    if env.id is not None:
        raise FlexrlError(f"--command: {env.id} takes no goal commands (Humanoid tasks do)")
    if task not in (None, "goal"):
        raise FlexrlError(f"--command sets the goal task's command; it excludes --task {task}")
    schedule = tuple(tuple(float(x) for x in c) for c in commands)
    if len(schedule) > 1 and steps_each is None:
        steps_each = max(1, env.max_episode_steps // len(schedule))
    fixed = env.command.model_copy(
        update={
            "schedule": schedule,
            "still_prob": 0.0,
            "resample_steps": steps_each or env.command.resample_steps,
        }
    )
    return env.model_copy(update={"task": "goal", "task_weights": {}, "command": fixed})


def untrained_commands(
    env: EnvConfig, commands: Sequence[tuple[float, float, float]]
) -> list[tuple[float, float, float]]:
    """The commands outside the ranges a policy trained on `env` drew its goal commands from
    (none when it never trained the goal task: its own skills' commands are all it knows)."""
    trained = env.task == "goal" if not env.task_weights else env.task_weights.get("goal", 0) > 0
    if env.id is not None or not trained:
        return []
    cfg = env.command
    ranges = (cfg.vx_range, cfg.vy_range, cfg.yaw_rate_range)
    tol = 1e-9
    return [
        tuple(c)
        for c in commands
        if any(not lo - tol <= x <= hi + tol for x, (lo, hi) in zip(c, ranges, strict=True))
    ]


def task_probabilities(weights: Mapping[Task, float]) -> np.ndarray:
    """Normalised weights over TASKS (tasks not named get 0)."""
    unknown = set(weights) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown task(s) {sorted(unknown)}; expected some of {', '.join(TASKS)}")
    p = np.array([float(weights.get(t, 0.0)) for t in TASKS])
    if np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"task weights must be >= 0 and not all 0, got {dict(weights)}")
    return p / p.sum()


def sample_task(probabilities: np.ndarray, rng: np.random.Generator) -> Task:
    return TASKS[int(rng.choice(len(TASKS), p=probabilities))]
