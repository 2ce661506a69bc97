"""One episode: the unit the store takes in and hands out, and the checks it passes on the way in
(numeric arrays of matching lengths, a fixed schema, no NaN or inf unless allowed)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexrl.errors import FlexrlError
from flexrl.store.format import ArraySpec, Schema, check_name


@dataclass
class Episode:
    """One episode as the store hands it out. `observations[t]` is seen before `actions[t]`;
    `final_observation` is the one after the last step (Minari's observations[T])."""

    observations: np.ndarray
    final_observation: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    goals: np.ndarray | None = None
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int | None = None
    task: str | None = None
    policy: str | None = None
    instruction: str | None = None  # what the agent was told, in words (issue 14)
    index: int = -1  # position in the dataset version it was read from, or in its rollout

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards, dtype=np.float64))

    def observations_t1(self) -> np.ndarray:
        """T+1 observations, the last being the final observation (Minari's convention)."""
        return np.concatenate([self.observations, self.final_observation[None]], axis=0)

    def step_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "observations": self.observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "terminations": self.terminations,
            "truncations": self.truncations,
        }
        if self.goals is not None:
            arrays["goals"] = self.goals
        for key, value in self.infos.items():
            arrays["infos/" + key] = value
        return arrays


def _as_array(value: Any, what: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise FlexrlError(f"{what} must be numeric, got dtype {array.dtype}")
    return np.ascontiguousarray(array)


def make_episode(
    observations: Any,
    actions: Any,
    rewards: Any,
    terminations: Any,
    truncations: Any,
    *,
    final_observation: Any = None,
    goals: Any = None,
    infos: Mapping[str, Any] | None = None,
    seed: int | None = None,
    task: str | None = None,
    policy: str | None = None,
    instruction: str | None = None,
) -> Episode:
    """Check one episode's arrays against each other and build an Episode.

    `observations` holds T+1 rows (Minari's convention, the last one after the final step), or
    T rows with `final_observation` given separately.
    """
    act = _as_array(actions, "actions")
    steps = len(act) if act.ndim else 0
    if steps == 0:
        raise FlexrlError("an episode needs at least one step (got 0 actions)")
    obs = _as_array(observations, "observations")
    if final_observation is None:
        if obs.ndim == 0 or len(obs) != steps + 1:
            raise FlexrlError(
                f"observations has {len(obs) if obs.ndim else 0} rows for {steps} actions: "
                "give T+1 observations, or T with final_observation"
            )
        obs, final = obs[:-1], obs[-1]
    else:
        final = _as_array(final_observation, "final_observation")
        if obs.ndim == 0 or len(obs) != steps or final.shape != obs.shape[1:]:
            raise FlexrlError(
                f"observations {obs.shape} and final_observation {final.shape} do not fit "
                f"{steps} actions"
            )
        final = final.astype(obs.dtype, copy=False)
    rew = _as_array(rewards, "rewards")
    if rew.shape != (steps,) or not np.issubdtype(rew.dtype, np.floating):
        raise FlexrlError(f"rewards must be {steps} floats, got shape {rew.shape} {rew.dtype}")
    flags = []
    for flag_name, flag in (("terminations", terminations), ("truncations", truncations)):
        values = _as_array(flag, flag_name)
        if values.shape != (steps,) or (
            values.dtype != np.bool_ and not np.isin(values, (0, 1)).all()
        ):
            raise FlexrlError(f"{flag_name} must be {steps} booleans, got shape {values.shape}")
        flags.append(values.astype(np.bool_, copy=False))
    goal_array = None
    if goals is not None:
        goal_array = _as_array(goals, "goals")
        if goal_array.ndim == 0 or len(goal_array) != steps:
            raise FlexrlError(f"goals must have one row per step ({steps}), got {goal_array.shape}")
    info_arrays = {}
    for key, value in (infos or {}).items():
        check_name(key, "info key")
        values = _as_array(value, f"info {key!r}")
        if values.ndim == 0 or len(values) != steps:
            raise FlexrlError(
                f"info {key!r} must have one row per step ({steps}), got {values.shape}"
            )
        info_arrays[key] = values
    if seed is not None and (not isinstance(seed, int | np.integer) or seed < 0):
        raise FlexrlError(f"seed must be a non-negative integer, got {seed!r}")
    if instruction is not None and not isinstance(instruction, str):
        raise FlexrlError(f"instruction must be text, got {type(instruction).__name__}")
    return Episode(
        observations=obs,
        final_observation=final,
        actions=act,
        rewards=rew,
        terminations=flags[0],
        truncations=flags[1],
        goals=goal_array,
        infos=dict(sorted(info_arrays.items())),
        seed=None if seed is None else int(seed),
        task=task,
        policy=policy,
        instruction=instruction,
    )


def narrow_floats(episode: Episode, keep: Schema | None = None) -> Episode:
    """The episode with its float64 arrays as float32: half the bytes, and what the policies
    consume (MuJoCo observes in float64). Arrays that `keep` (an existing dataset's schema)
    stores as float64 stay float64, so appending to an older dataset still fits it."""

    def cast(values: np.ndarray, spec: ArraySpec | None) -> np.ndarray:
        kept = spec is not None and np.dtype(spec.dtype) == np.float64
        if values.dtype != np.float64 or kept:
            return values
        return values.astype(np.float32)

    infos = dict(keep.infos) if keep is not None else {}
    observations = keep.observations if keep is not None else None
    return dataclasses.replace(
        episode,
        observations=cast(episode.observations, observations),
        final_observation=cast(episode.final_observation, observations),
        actions=cast(episode.actions, keep.actions if keep is not None else None),
        rewards=cast(episode.rewards, keep.rewards if keep is not None else None),
        goals=None
        if episode.goals is None
        else cast(episode.goals, keep.goals if keep is not None else None),
        infos={k: cast(v, infos.get(k)) for k, v in episode.infos.items()},
    )


def schema_of(episode: Episode) -> Schema:
    return Schema(
        observations=ArraySpec.of_steps(episode.observations),
        actions=ArraySpec.of_steps(episode.actions),
        rewards=ArraySpec.of_steps(episode.rewards),
        goals=ArraySpec.of_steps(episode.goals) if episode.goals is not None else None,
        infos=tuple((k, ArraySpec.of_steps(v)) for k, v in episode.infos.items()),
    )


def check_finite(episode: Episode, where: str) -> None:
    """Refuse NaN and inf in what learning reads: one line naming the array, step and value."""
    arrays = {
        "observations": episode.observations,
        "final_observation": episode.final_observation[None],
        "actions": episode.actions,
        "rewards": episode.rewards,
    }
    for name, values in arrays.items():
        if not np.issubdtype(values.dtype, np.inexact):
            continue
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            value = values[row][bad[row]].flat[0] if values.ndim > 1 else values[row]
            at = "" if name == "final_observation" else f" at step {row}"
            raise FlexrlError(
                f"{where}: {name} holds {value}{at} ({int(bad.sum())} non-finite values); "
                "nothing was stored (allow_nonfinite=True or --allow-nonfinite stores it anyway)"
            )
