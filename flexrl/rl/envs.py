"""Vectorised training environments, and their exact state for resuming.

A resumed run must continue with bit-identical environments, so a checkpoint holds, per env:

- MuJoCo's integration state (`mj_getState(mjSTATE_INTEGRATION)`: time, qpos, qvel, act,
  warm start, controls, ...) and a copy of every mjData array. The arrays matter because
  gymnasium's envs read quantities the last `mj_step` left behind (Humanoid's centre of mass
  uses `xipos` before stepping); arrays sized by the current contacts are skipped when their
  size differs, as `mj_step` recomputes them before use;
- the `TimeLimit` step counter and the env's `np_random` generator (it draws reset noise);
- the state of any layer (wrapper or env) that defines `state_dict()` / `load_state_dict()`,
  so a task with its own state (a goal command, a resample counter) can resume exactly too.

The current observations and episode counters belong to the learner and are saved there.
Each training env's outermost layer (`ExactState`) hands its state out and takes it back as the
attribute `exact_state`, so the vector env's get_attr/set_attr reach it whether the envs run in
this process or in worker processes.
"""

from __future__ import annotations

import functools
import multiprocessing
import signal
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch
from gymnasium.envs.mujoco import MujocoEnv
from gymnasium.wrappers import TimeLimit

from flexrl.config import EnvConfig
from flexrl.envs import humanoid_kwargs, make_flat_env
from flexrl.errors import FlexrlError

_INTEGRATION = mujoco.mjtState.mjSTATE_INTEGRATION


class ExactState(gym.Wrapper):
    """`env.exact_state`: everything a resume needs (see the module docstring), to read or to
    restore."""

    @property
    def exact_state(self) -> dict[str, Any]:
        return get_env_state(self.env)

    @exact_state.setter
    def exact_state(self, state: dict[str, Any]) -> None:
        set_env_state(self.env, state)


def _make_training_env(cfg: EnvConfig) -> gym.Env:
    return ExactState(make_flat_env(cfg))


def _make_worker_env(cfg: EnvConfig) -> gym.Env:
    """Runs in each AsyncVectorEnv worker (and once in the learner, for the spaces). Ctrl-C
    reaches the whole process group: the learner handles it (a checkpoint, then closing its
    workers), so the workers ignore it rather than die mid-step and turn the interruption
    into an error."""
    if multiprocessing.parent_process() is not None:  # a worker, not the learner
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return _make_training_env(cfg)


def make_vector_env(cfg: EnvConfig) -> gym.vector.VectorEnv:
    """`cfg.num_envs` copies, stepped as `cfg.vectorization` says. SAME_STEP autoreset puts the
    final observation of an episode into `infos["final_obs"]`, which truncation bootstrapping
    needs."""
    mode = cfg.vectorization
    if mode == "auto":
        mode = "sync" if cfg.id is not None else "threads"
    if mode == "threads":
        if cfg.id is not None:
            raise FlexrlError(
                "env.vectorization=threads steps flexrl's Humanoid skills only; "
                f"for env.id={cfg.id} use sync or async"
            )
        from flexrl.envs.vector import HumanoidVectorEnv

        return HumanoidVectorEnv(
            cfg.num_envs, cfg.max_episode_steps, cfg.sim_threads, **humanoid_kwargs(cfg)
        )
    same_step = gym.vector.AutoresetMode.SAME_STEP
    if mode == "async":
        # spawn: workers do not inherit this process's torch threads or open files.
        fns = [functools.partial(_make_worker_env, cfg) for _ in range(cfg.num_envs)]
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=same_step, context="spawn")
    fns = [functools.partial(_make_training_env, cfg) for _ in range(cfg.num_envs)]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=same_step)


def _layers(env: gym.Env) -> list[Any]:
    layers: list[Any] = []
    while isinstance(env, gym.Wrapper):
        layers.append(env)
        env = env.env
    return [*layers, env]


def get_env_state(env: gym.Env) -> dict[str, Any]:
    state: dict[str, Any] = {"np_random": env.unwrapped.np_random.bit_generator.state}
    custom = {}
    for i, layer in enumerate(_layers(env)):
        if isinstance(layer, TimeLimit):
            state["elapsed_steps"] = layer._elapsed_steps
        if callable(getattr(layer, "state_dict", None)):
            custom[i] = layer.state_dict()
    state["custom"] = custom
    base = env.unwrapped
    if isinstance(base, MujocoEnv):
        vec = np.empty(mujoco.mj_stateSize(base.model, _INTEGRATION), np.float64)
        mujoco.mj_getState(base.model, base.data, vec, _INTEGRATION)
        arrays = {
            name: value
            for name in dir(base.data)
            if not name.startswith("_")
            and isinstance(value := getattr(base.data, name), np.ndarray)
        }
        state["mujoco"] = {"integration": torch.from_numpy(vec), "arrays": _pack(arrays)}
    return state


def set_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    env.unwrapped.np_random.bit_generator.state = state["np_random"]
    for i, layer in enumerate(_layers(env)):
        if isinstance(layer, TimeLimit):
            layer._elapsed_steps = state["elapsed_steps"]
        if i in state["custom"]:
            layer.load_state_dict(state["custom"][i])
    if "mujoco" in state:
        base = env.unwrapped
        assert isinstance(base, MujocoEnv)
        for name, saved in _unpack(state["mujoco"]["arrays"]).items():
            current = getattr(base.data, name, None)
            if isinstance(current, np.ndarray) and current.shape == saved.shape:
                current[...] = saved
        vec = state["mujoco"]["integration"].numpy()
        mujoco.mj_setState(base.model, base.data, vec, _INTEGRATION)


def _pack(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Many small arrays as one byte tensor and a layout (torch.save is slow per tensor)."""
    layout = [(name, a.dtype.str, list(a.shape)) for name, a in arrays.items()]
    blob = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values())
    return {"layout": layout, "bytes": torch.frombuffer(bytearray(blob), dtype=torch.uint8)}


def _unpack(packed: dict[str, Any]) -> dict[str, np.ndarray]:
    blob = packed["bytes"].numpy().tobytes()
    arrays, offset = {}, 0
    for name, dtype, shape in packed["layout"]:
        count = int(np.prod(shape))
        arrays[name] = np.frombuffer(blob, dtype, count, offset).reshape(shape)
        offset += count * np.dtype(dtype).itemsize
    return arrays


def get_vector_env_state(envs: gym.vector.VectorEnv) -> list[dict[str, Any]]:
    from flexrl.envs.vector import HumanoidVectorEnv

    if isinstance(envs, HumanoidVectorEnv):  # bare envs; the vector env counts their steps
        return [
            {**get_env_state(env), "elapsed_steps": int(n)}
            for env, n in zip(envs.envs, envs.elapsed_steps, strict=True)
        ]
    return list(envs.get_attr("exact_state"))


def set_vector_env_state(envs: gym.vector.VectorEnv, states: list[dict[str, Any]]) -> None:
    if len(states) != envs.num_envs:
        raise FlexrlError(
            f"checkpoint has {len(states)} envs, the recipe {envs.num_envs}: keep env.num_envs"
        )
    from flexrl.envs.vector import HumanoidVectorEnv

    if isinstance(envs, HumanoidVectorEnv):
        for i, (env, state) in enumerate(zip(envs.envs, states, strict=True)):
            set_env_state(env, state)
            envs.elapsed_steps[i] = state["elapsed_steps"]
        return
    envs.set_attr("exact_state", list(states))


def set_every_env(envs: gym.vector.VectorEnv, name: str, value: Any) -> None:
    """Set attribute `name` to `value` on every env: how the trainer tells flexrl's Humanoid
    envs how far its command curriculum has got (`command_progress`) and that they draw
    training's commands (`command_training`; CommandConfig)."""
    from flexrl.envs.vector import HumanoidVectorEnv

    if isinstance(envs, HumanoidVectorEnv):
        for env in envs.envs:
            setattr(env, name, value)
        return
    envs.set_attr(name, [value] * envs.num_envs)
