"""Environments: flexrl's Humanoid skills, or any gymnasium environment with Box spaces.

Importing this package registers the skills with gymnasium, so `gym.make(ID)` works for:

  flexrl/HumanoidWalk-v0       walk_forward, goal [walk_speed, 0, 0]
  flexrl/HumanoidTurnLeft-v0   turn_left,    goal [turn_speed, 0, +turn_rate]
  flexrl/HumanoidTurnRight-v0  turn_right,   goal [turn_speed, 0, -turn_rate]
  flexrl/HumanoidGoal-v0       goal,         [vx, vy, yaw_rate] sampled, resampled every N steps
  flexrl/HumanoidMultiTask-v0  a task per episode, equal weights unless `task_weights=` is given

Keyword arguments of `gym.make` (task, task_weights, command, reward, healthy_z_range and
Humanoid-v5's own) override the defaults. See `flexrl.envs.humanoid` for the observation layout.
"""

from __future__ import annotations

import gymnasium as gym

from flexrl.config import EnvConfig, Task
from flexrl.envs.humanoid import BASE_OBS_DIM, GOAL_SLICE, HumanoidSkillEnv
from flexrl.envs.tasks import GOAL_DIM, TASKS, task_id
from flexrl.errors import FlexrlError

__all__ = [
    "BASE_OBS_DIM",
    "GOAL_DIM",
    "GOAL_SLICE",
    "MULTITASK_ID",
    "TASKS",
    "TASK_IDS",
    "HumanoidSkillEnv",
    "humanoid_kwargs",
    "make_env",
    "make_flat_env",
    "task_id",
]

ENTRY_POINT = "flexrl.envs.humanoid:HumanoidSkillEnv"
TASK_IDS: dict[Task, str] = {
    "walk_forward": "flexrl/HumanoidWalk-v0",
    "turn_left": "flexrl/HumanoidTurnLeft-v0",
    "turn_right": "flexrl/HumanoidTurnRight-v0",
    "goal": "flexrl/HumanoidGoal-v0",
}
MULTITASK_ID = "flexrl/HumanoidMultiTask-v0"


def _register() -> None:
    specs: dict[str, dict] = {env_id: {"task": task} for task, env_id in TASK_IDS.items()}
    specs[MULTITASK_ID] = {"task_weights": dict.fromkeys(TASKS, 1.0)}
    for env_id, kwargs in specs.items():
        if env_id not in gym.registry:  # importing twice (reload, subprocess) is harmless
            gym.register(env_id, entry_point=ENTRY_POINT, max_episode_steps=1000, kwargs=kwargs)


_register()


def make_env(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """One environment as the recipe describes it (seed it with `env.reset(seed=...)`)."""
    if cfg.id is not None:
        try:
            return gym.make(
                cfg.id, max_episode_steps=cfg.max_episode_steps, render_mode=render_mode
            )
        except gym.error.Error as e:
            raise FlexrlError(f"env.id: cannot make {cfg.id!r}: {e}") from None
    kwargs = humanoid_kwargs(cfg)
    return gym.make(
        MULTITASK_ID if kwargs["task_weights"] else TASK_IDS[cfg.task],
        max_episode_steps=cfg.max_episode_steps,
        render_mode=render_mode,
        **kwargs,
    )


def make_flat_env(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """`make_env`, with Dict observations flattened into one vector (what a policy takes); the
    actions must be a Box."""
    env = make_env(cfg, render_mode)
    if not isinstance(env.observation_space, gym.spaces.Box):
        env = gym.wrappers.FlattenObservation(env)
    if not isinstance(env.action_space, gym.spaces.Box):
        raise FlexrlError(f"env: PPO needs a continuous (Box) action space, got {env.action_space}")
    return env


def humanoid_kwargs(cfg: EnvConfig) -> dict:
    """The HumanoidSkillEnv arguments a recipe's env section gives."""
    weights = {task: w for task, w in cfg.task_weights.items() if w > 0}
    return {
        "task": cfg.task,
        "task_weights": weights or None,
        "command": cfg.command,
        "reward": cfg.reward,
        "healthy_z_range": cfg.healthy_z_range,
        "observation_frame": cfg.observation_frame,
        "observe_tracking": cfg.observe_tracking,
    }
