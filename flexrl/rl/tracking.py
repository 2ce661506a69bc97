"""How well training episodes follow their commands: the skill metrics behind learning curves.

Humanoid skills report, per step, the measured heading-frame velocity and yaw rate and the goal
they were rewarded against (see flexrl.envs.humanoid). `CommandTracking` averages them over each
training episode and, per PPO update, over the episodes that ended in it, in the units
`flexrl eval` reports: forward speed (m/s), velocity error |v - goal[:2]| (m/s), yaw-rate error
(rad/s), and the fall rate (the share of ended episodes that terminated). Envs without these
infos (a plain gymnasium id) get only the fall rate. A run of several tasks also gets each
metric per task (`episodic_fall_rate/turn_left`), from the `task_id` its envs report: pooled,
the skills' curves would hide which one lags.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from flexrl.config import TASKS

SUMS = ("forward_speed", "lin_vel_error", "yaw_rate_error")


class CommandTracking:
    def __init__(self, num_envs: int, per_task: bool = False) -> None:
        self.sums = np.zeros((num_envs, len(SUMS)))
        self.steps = np.zeros(num_envs, dtype=np.int64)
        self.per_task = per_task
        # Per episode ended since the last metrics(): (task id or -1, fell, means of SUMS or None)
        self.episodes: list[tuple[int, bool, np.ndarray | None]] = []

    def step(
        self, infos: dict[str, Any], terminations: np.ndarray, truncations: np.ndarray
    ) -> None:
        done = terminations | truncations
        measured = _step_values(infos)
        task_ids = _task_ids(infos, len(done))
        if done.any():  # the ended envs' last step is in final_info
            final_info = infos.get("final_info", {})
            final = _step_values(final_info)
            if measured is not None and final is not None:
                measured[done] = final[done]
            if "task_id" in final_info:
                task_ids[done] = _task_ids(final_info, len(done))[done]
        if measured is not None:
            self.sums += measured
            self.steps += 1
        for i in np.flatnonzero(done):
            means = None if measured is None else self.sums[i] / max(self.steps[i], 1)
            self.episodes.append((int(task_ids[i]), bool(terminations[i]), means))
            self.sums[i] = 0.0
            self.steps[i] = 0

    def metrics(self) -> dict[str, float]:
        """Means over the episodes that ended since the last call (none: no keys)."""
        out = _means(self.episodes, "")
        if self.per_task:
            for task_id in sorted({task for task, _, _ in self.episodes} - {-1}):
                mine = [e for e in self.episodes if e[0] == task_id]
                out.update(_means(mine, f"/{TASKS[task_id]}"))
        self.episodes = []
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"sums": torch.from_numpy(self.sums.copy()), "steps": torch.from_numpy(self.steps)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.sums = state["sums"].numpy().copy()
        self.steps = state["steps"].numpy().copy()


def _means(episodes: list[tuple[int, bool, np.ndarray | None]], suffix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    if episodes:
        out[f"episodic_fall_rate{suffix}"] = float(np.mean([fell for _, fell, _ in episodes]))
    ended = [means for _, _, means in episodes if means is not None]
    if ended:
        means = np.mean(ended, axis=0)
        out.update({f"episodic_{n}{suffix}": float(v) for n, v in zip(SUMS, means, strict=True)})
    return out


def _task_ids(infos: dict[str, Any], num_envs: int) -> np.ndarray:
    """[num_envs] the task id each env reports (-1 where it reports none)."""
    if "task_id" not in infos:
        return np.full(num_envs, -1)
    return np.asarray(infos["task_id"]).astype(np.int64).copy()


def _step_values(infos: dict[str, Any]) -> np.ndarray | None:
    """[num_envs, len(SUMS)] of one step's infos, or None when the env reports no tracking."""
    if "lin_vel" not in infos or "goal" not in infos:
        return None
    lin_vel, goal = np.asarray(infos["lin_vel"]), np.asarray(infos["goal"])
    yaw_rate = np.asarray(infos["yaw_rate"])
    return np.stack(
        [
            lin_vel[:, 0],
            np.linalg.norm(lin_vel - goal[:, :2], axis=1),
            np.abs(yaw_rate - goal[:, 2]),
        ],
        axis=1,
    )
