"""Episodes recorded step by step from an environment, as the store takes them in.

`EpisodeBuffer` holds one running episode: each step's observation, action, reward, flags,
goal (`info["goal"]`, the command the step was rewarded against) and numeric infos, and
`finish` turns it into the store's `Episode`. The rollout loop (eval, collect) and training's
replay recorder both record through it, so every dataset's episodes are built one way.

Infos kept: the numeric, small entries of each step's info (dicts one level deep become
`key.sub`), except those stored elsewhere (the goal, the task) and names the store's name rule
refuses. The keys are fixed by the first step a recorder sees (`info_keys`), so every episode
of a dataset has the same ones; a key missing at some step is stored as NaN there.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from flexrl.errors import FlexrlError
from flexrl.store.episode import Episode, make_episode
from flexrl.store.format import check_name, parse_ref

# Infos that are stored elsewhere: the goal as `goals`, the task as the episode's task.
SKIPPED_INFO_KEYS = frozenset({"goal", "task_id", "final_obs", "final_info"})
# Numeric info arrays larger than this per step are not kept (images, contact tables...).
MAX_INFO_VALUES = 64


def check_dataset_name(name: str, option: str) -> None:
    """A dataset name (the store's name rule refuses names that could escape datasets/) or URI;
    writers add versions, so a reference such as `name@v2` is refused."""
    if parse_ref(name).address != name:
        raise FlexrlError(
            f"{option} takes a dataset name, not a reference: {name!r} (writing adds a version)"
        )


def flat_infos(info: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The numeric, small, storable entries of one step's info; dicts one level deep."""
    out: dict[str, np.ndarray] = {}
    for key, value in info.items():
        if key in SKIPPED_INFO_KEYS or key.startswith("_"):
            continue
        items = (
            [(f"{key}.{k}", v) for k, v in value.items()]
            if isinstance(value, Mapping)
            else [(key, value)]
        )
        for name, item in items:
            array = np.asarray(item)
            numeric = np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
            if numeric and array.size <= MAX_INFO_VALUES and _storable_key(name):
                out[name] = array
    return out


@functools.lru_cache(maxsize=1024)  # called for every key of every step
def _storable_key(name: str) -> bool:
    try:
        check_name(name, "info key")  # the store's name rule also applies to info keys
    except FlexrlError:
        return False
    return True


class EpisodeBuffer:
    """The growing arrays of one running episode. `index` is its position in the rollout that
    makes it; `seed` its reset seed (None for an episode an env autoreset without one)."""

    def __init__(
        self,
        index: int,
        seed: int | None,
        obs: np.ndarray,
        task: str | None = None,
        policy: str | None = None,
        instruction: str | None = None,
    ):
        self.index = index
        self.seed = seed
        self.task = task
        self.policy = policy
        self.instruction = instruction
        self.obs = obs  # the observation the next action is chosen for
        self.observations: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terminations: list[bool] = []
        self.truncations: list[bool] = []
        self.goals: list[np.ndarray] = []
        self.infos: list[dict[str, np.ndarray]] = []

    @property
    def length(self) -> int:
        return len(self.actions)

    def record(
        self, action: np.ndarray, reward: float, term: bool, trunc: bool, info: Mapping[str, Any]
    ) -> None:
        self.observations.append(self.obs)
        self.actions.append(action)
        self.rewards.append(float(reward))
        self.terminations.append(bool(term))
        self.truncations.append(bool(trunc))
        if "goal" in info:
            self.goals.append(np.asarray(info["goal"]))
        self.infos.append(flat_infos(info))

    def finish(self, final_observation: np.ndarray, info_keys: Mapping[str, np.ndarray]) -> Episode:
        """The store's Episode, with the infos named in `info_keys` (key -> an example row)."""
        steps = len(self.actions)
        infos = {}
        for key, template in info_keys.items():
            rows = [step.get(key) for step in self.infos]
            if any(r is None for r in rows):
                filler = np.full(template.shape, np.nan)
                rows = [filler if r is None else r for r in rows]
            infos[key] = np.stack(rows)
        episode = make_episode(
            np.stack(self.observations),
            np.stack(self.actions),
            np.asarray(self.rewards, dtype=np.float64),
            np.asarray(self.terminations),
            np.asarray(self.truncations),
            final_observation=np.asarray(final_observation),
            goals=np.stack(self.goals) if len(self.goals) == steps else None,
            infos=infos,
            seed=self.seed,
            task=self.task,
            policy=self.policy,
            instruction=self.instruction,
        )
        episode.index = self.index
        return episode
