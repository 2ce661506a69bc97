"""The one episode loop behind eval, collect and video: N env slots in lockstep, one batched
policy call per step.

    for rolled in rollout(slots, actor, [EpisodeSpec(k, seed + k) for k in range(100)]):
        writer.add(rolled.episode)          # the store's Episode
        print(rolled.result.fall_rate ...)  # its metrics (flexrl.rollout.metrics)

Episodes are handed to free slots in the order given and come out as they end (so not
necessarily in that order; `Episode.index` says which). Each one resets its slot with its own
seed (and task) and draws any randomness from its own generator, `default_rng([seed, 1])`,
so an episode's data does not depend on its slot or on what ran beside it. The policy is asked
for the running slots only. Batched float32 inference can differ in the last bit with the batch
size, so bit-identical reruns need the same `num_envs`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexrl.config import TASKS
from flexrl.errors import FlexrlError
from flexrl.rollout.actors import Actor
from flexrl.rollout.metrics import EpisodeResult, episode_result
from flexrl.rollout.slots import EnvSlots
from flexrl.store import Episode
from flexrl.store.recording import EpisodeBuffer


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to roll out: its position in the rollout, reset seed and forced task; or
    the goal command it is held at and the instruction that meant it (recorded with it)."""

    index: int
    seed: int | None
    task: str | None = None
    command: tuple[float, float, float] | None = None
    instruction: str | None = None


@dataclass
class Rolled:
    episode: Episode
    result: EpisodeResult


class _Running:
    """A slot's current episode: its buffer, generator, start info and latest goal."""

    def __init__(
        self, spec: EpisodeSpec, obs: np.ndarray, info: dict[str, Any], policy: str | None
    ):
        task_id = info.get("task_id")  # the Humanoid skill the episode runs; none elsewhere
        task = TASKS[int(task_id)] if task_id is not None else None
        self.buffer = EpisodeBuffer(spec.index, spec.seed, obs, task, policy, spec.instruction)
        seed = spec.seed if spec.seed is not None else spec.index
        self.rng = np.random.default_rng([seed, 1])
        self.start = info
        self.goal = info.get("goal")


def rollout(
    slots: EnvSlots,
    actor: Actor,
    episodes: Sequence[EpisodeSpec],
    *,
    policy: str | None = None,
    max_steps: int | None = None,
    allow_nonfinite: bool = True,
    on_step: Callable[[list[int | None]], None] | None = None,
) -> Iterator[Rolled]:
    """Roll `episodes` out over `slots`; yield each as it ends. `policy` is recorded in every
    episode; `max_steps` cuts episodes short; `allow_nonfinite=False` refuses a NaN or inf
    action before the env runs it; `on_step(episodes)` runs after the first resets and after
    every step, with the index of the episode each slot holds (None: idle), before ended
    episodes make way for the next (a video renders a slot there)."""
    todo = deque(episodes)
    running: list[_Running | None] = [None] * len(slots.envs)
    info_keys: dict[str, np.ndarray] | None = None

    def start(i: int) -> None:
        running[i] = None
        if todo:
            spec = todo.popleft()
            obs, info = slots.reset(i, spec.seed, spec.task, spec.command)
            actor.reset(i)
            running[i] = _Running(spec, obs, info, policy)

    def stepped() -> None:
        if on_step is not None:
            on_step([None if ep is None else ep.buffer.index for ep in running])

    for i in range(len(running)):
        start(i)
    stepped()
    while live := [i for i, ep in enumerate(running) if ep is not None]:
        eps = [ep for ep in running if ep is not None]
        obs = np.stack([ep.buffer.obs for ep in eps])
        goals = None if eps[0].goal is None else np.stack([ep.goal for ep in eps])
        actions = actor.act(live, obs, goals, [ep.rng for ep in eps])
        if not allow_nonfinite and not np.isfinite(actions).all():
            _refuse(eps, actions)
        next_obs, rewards, terminated, truncated, infos = slots.step(live, actions)
        actor.observe(live, rewards)
        stepped()
        for j, (i, ep) in enumerate(zip(live, eps, strict=True)):
            ep.buffer.record(actions[j], rewards[j], terminated[j], truncated[j], infos[j])
            if info_keys is None:  # fixed by the first step so every episode has the same
                info_keys = ep.buffer.infos[0]
            cut = max_steps is not None and ep.buffer.length >= max_steps
            if terminated[j] or truncated[j] or cut:
                episode = ep.buffer.finish(next_obs[j], info_keys)
                yield Rolled(episode, episode_result(episode, ep.start))
                start(i)
            else:
                ep.buffer.obs = next_obs[j]
                ep.goal = infos[j].get("goal")


def _refuse(eps: list[_Running], actions: np.ndarray) -> None:
    row = int(np.argwhere(~np.isfinite(actions))[0][0])
    buffer, value = eps[row].buffer, actions[row][~np.isfinite(actions[row])][0]
    raise FlexrlError(
        f"episode {buffer.index} (seed {buffer.seed}): the policy's actions hold {value} at "
        f"step {buffer.length}; nothing was stored (--allow-nonfinite stores it anyway)"
    )
