"""`HumanoidVectorEnv`: many Humanoid skill envs stepped together, on every core of the process.

MuJoCo releases the GIL while it steps, so native threads simulate in parallel: each thread
steps its contiguous share of the envs (a chunk per thread, so each env always runs on the same
thread's turn and the results never depend on scheduling). Everything else per step is batched
over all envs in numpy (`flexrl.envs.humanoid.evaluate_batch`, the same computation a single
env's `step` makes), so the per-env Python cost that would hold the GIL stays small.

It behaves as `gymnasium.vector.SyncVectorEnv` over `TimeLimit(HumanoidSkillEnv)` with SAME_STEP
autoreset does, bit for bit (tested): same observations, rewards, flags and infos, the final
observation of an episode in `infos["final_obs"]` and its info in `infos["final_info"]`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco import MujocoEnv
from gymnasium.vector.utils import batch_space

from flexrl.envs.humanoid import (
    MEASURED_INFO,
    HumanoidSkillEnv,
    evaluate_batch,
    observe_batch,
    track_batch,
)


def available_cores() -> int:
    """The cores this process may run on (not the machine's count, under a CPU limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ThreadedPhysics:
    """Steps the physics of up to `num_envs` MuJoCo envs on `threads` native threads (default:
    every core this process may use), each thread a contiguous share of the envs given."""

    def __init__(self, num_envs: int, threads: int | None = None) -> None:
        self.threads = max(1, min(threads or available_cores(), num_envs))
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def simulate(self, envs: Sequence[MujocoEnv], actions: np.ndarray) -> None:
        """`do_simulation(actions[i])` for every env i (one action row per env given)."""
        if self.pool is None or len(envs) == 1:
            _simulate(envs, actions, np.arange(len(envs)))
            return
        chunks = np.array_split(np.arange(len(envs)), min(self.threads, len(envs)))
        list(self.pool.map(_simulate, [envs] * len(chunks), [actions] * len(chunks), chunks))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _simulate(envs: Sequence[MujocoEnv], actions: np.ndarray, indices: np.ndarray) -> None:
    for i in indices:
        envs[i].do_simulation(actions[i], envs[i].frame_skip)


class HumanoidVectorEnv(gym.vector.VectorEnv):
    """`num_envs` HumanoidSkillEnv made with `env_kwargs`, simulated on `threads` threads."""

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int,
        max_episode_steps: int,
        threads: int | None = None,
        **env_kwargs: Any,
    ) -> None:
        self.envs = [HumanoidSkillEnv(**env_kwargs) for _ in range(num_envs)]
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.elapsed_steps = np.zeros(num_envs, dtype=np.int64)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = None
        self.physics = ThreadedPhysics(num_envs, threads)

    # --- gymnasium's VectorEnv ------------------------------------------------------------

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None or isinstance(seed, int):
            seed = [None if seed is None else seed + i for i in range(self.num_envs)]
        if len(seed) != self.num_envs:
            raise ValueError(f"reset: {len(seed)} seeds for {self.num_envs} envs")
        rows, infos = [], []
        for env, s in zip(self.envs, seed, strict=True):
            obs, info = env.reset(seed=s, options=options)
            rows.append(obs)
            infos.append(info)
        self.elapsed_steps[:] = 0
        return np.stack(rows), _batch_infos(infos)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self.physics.simulate(self.envs, np.asarray(actions))
        rewards, terms, measured, healthy = evaluate_batch(self.envs)
        task_infos = [env.advance() for env in self.envs]
        self.elapsed_steps += 1
        terminated = ~healthy
        truncated = self.elapsed_steps >= self.max_episode_steps
        track_batch(self.envs, measured)
        obs = observe_batch(self.envs, measured)
        infos = _batch_infos(task_infos)
        everyone = np.ones(self.num_envs, bool)
        for key in MEASURED_INFO:
            infos[key], infos[f"_{key}"] = measured[key].copy(), everyone
        infos["reward_terms"] = {**terms, **{f"_{k}": everyone for k in terms}}
        infos["_reward_terms"] = everyone
        done = terminated | truncated
        if done.any():
            infos = self._autoreset(np.flatnonzero(done), obs, infos)
        return obs, rewards, terminated, truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        self.physics.close()
        for env in self.envs:
            env.close()

    # --- internals --------------------------------------------------------------------------

    def _autoreset(self, ended: np.ndarray, obs: np.ndarray, infos: dict[str, Any]) -> dict:
        """As SAME_STEP autoreset: the ended envs' last observation and info move to
        final_obs/final_info, and obs/infos hold the first ones of the next episodes."""
        final_obs = np.empty(self.num_envs, dtype=object)
        final_info = _select(infos, ended, self.num_envs)
        for i in ended:
            final_obs[i] = obs[i].copy()
            obs[i], info = self.envs[i].reset()
            self.elapsed_steps[i] = 0
            for key in ("goal", "task_id", *MEASURED_INFO):
                infos[key][i] = info[key]
        # A reset has no reward terms: they are zero and masked out where an episode began.
        mask = np.zeros(self.num_envs, bool)
        mask[ended] = True
        terms = infos["reward_terms"]
        for key in [k for k in terms if not k.startswith("_")]:
            terms[key] = np.where(mask, 0.0, terms[key])
            terms[f"_{key}"] = ~mask
        infos["_reward_terms"] = ~mask
        infos.update(final_obs=final_obs, _final_obs=mask, final_info=final_info, _final_info=mask)
        return infos

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return tuple(getattr(env, name) for env in self.envs)


def _batch_infos(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-env infos (task and measured ones) as vector-env arrays and masks."""
    out: dict[str, Any] = {}
    for key in infos[0]:
        out[key] = np.stack([np.asarray(info[key]) for info in infos])
        out[f"_{key}"] = np.ones(len(infos), bool)
    return out


def _select(infos: dict[str, Any], rows: np.ndarray, num_envs: int) -> dict[str, Any]:
    """A copy of `infos` with only `rows` present (the others zero and masked out)."""
    mask = np.zeros(num_envs, bool)
    mask[rows] = True
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict):
            out[key] = _select(value, rows, num_envs)
        else:
            kept = np.zeros_like(value)
            kept[rows] = value[rows]
            out[key] = kept
        out[f"_{key}"] = mask
    return out
