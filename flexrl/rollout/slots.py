"""`EnvSlots`: N environments the rollout loop resets one at a time and steps together.

Each slot runs one episode after another, each reset with its own seed (and task), which
gymnasium's vector envs cannot do with autoreset on, and which stepping only the running slots
needs. For flexrl's Humanoid skills the slots are bare `HumanoidSkillEnv`s: their physics runs on
native threads over every core (`ThreadedPhysics`, as training's vector env) and the rest of a
step is batched in numpy (`finish_steps`), the same computation as `env.step`, bit for bit, with
`TimeLimit`'s truncation counted here. Any other env (a gymnasium id) is stepped one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from flexrl.config import TASKS, EnvConfig

StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]


class EnvSlots:
    """`num_envs` envs made from `cfg` (flat observations, as the policy saw them)."""

    def __init__(
        self,
        cfg: EnvConfig,
        num_envs: int,
        render_mode: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.max_steps = cfg.max_episode_steps  # TimeLimit's, counted here for bare Humanoids
        self.physics = None
        if cfg.id is None:
            from flexrl.envs import humanoid_kwargs
            from flexrl.envs.humanoid import HumanoidSkillEnv
            from flexrl.envs.vector import ThreadedPhysics

            kwargs = humanoid_kwargs(cfg)
            self.humanoids = [
                HumanoidSkillEnv(**kwargs, render_mode=render_mode) for _ in range(num_envs)
            ]
            self.envs: list[gym.Env] = list(self.humanoids)
            self.physics = ThreadedPhysics(num_envs, threads)
        else:
            from flexrl.envs import make_flat_env

            self.envs = [make_flat_env(cfg, render_mode) for _ in range(num_envs)]
        self.elapsed = np.zeros(num_envs, dtype=np.int64)

    @property
    def action_space(self) -> gym.spaces.Box:
        space = self.envs[0].action_space
        assert isinstance(space, gym.spaces.Box)
        return space

    def reset(
        self,
        slot: int,
        seed: int | None,
        task: str | None,
        command: tuple[float, float, float] | None = None,
    ) -> tuple[np.ndarray, dict]:
        """Start slot's next episode; `task` forces a Humanoid skill for it, `command` holds
        the goal task at that command."""
        self.elapsed[slot] = 0
        options: dict | None = {"task": task} if task in TASKS else None
        if command is not None:
            options = {"task": "goal", "command": command}
        return self.envs[slot].reset(seed=seed, options=options)

    def step(self, slots: Sequence[int], actions: np.ndarray) -> StepResult:
        """One step of the given slots: observations, rewards, terminated, truncated, infos."""
        if self.physics is not None:
            from flexrl.envs.humanoid import finish_steps

            self.elapsed[slots] += 1
            truncated = self.elapsed[slots] >= self.max_steps
            envs = [self.humanoids[i] for i in slots]
            self.physics.simulate(envs, actions)
            obs, rewards, terminated, infos = finish_steps(envs)
            return obs, rewards, terminated, truncated, infos
        rows = [self.envs[i].step(a) for i, a in zip(slots, actions, strict=True)]
        obs, rewards, terms, truncs, infos = zip(*rows, strict=True)
        return (
            np.stack(obs),
            np.asarray(rewards, dtype=np.float64),
            np.asarray(terms, dtype=bool),
            np.asarray(truncs, dtype=bool),  # the env's own TimeLimit
            list(infos),
        )

    def close(self) -> None:
        if self.physics is not None:
            self.physics.close()
        for env in self.envs:
            env.close()


def probe_env(cfg: EnvConfig) -> tuple[tuple[int, ...], np.dtype, bool]:
    """The observation shape and dtype of `cfg`'s env as a policy sees it and whether its
    actions are bounded (making the env checks the id)."""
    from flexrl.envs import make_flat_env

    env = make_flat_env(cfg)
    try:
        space = env.action_space
        bounded = bool(np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high)))
        observations = env.observation_space
        return tuple(observations.shape), np.dtype(observations.dtype), bounded
    finally:
        env.close()
