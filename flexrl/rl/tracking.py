"""How well training episodes follow their commands: the skill metrics behind learning curves.

Humanoid skills report, per step, the measured heading-frame velocity and yaw rate and the goal
they were rewarded against (see flexrl.envs.humanoid). `CommandTracking` averages them over each
training episode and, per PPO update, over the episodes that ended in it, in the units
`flexrl eval` reports: forward speed (m/s), velocity error |v - goal[:2]| (m/s), yaw-rate error
(rad/s), and the fall rate (the share of ended episodes that terminated). Envs without these
infos (a plain gymnasium id) get only the fall rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SUMS = ("forward_speed", "lin_vel_error", "yaw_rate_error")


class CommandTracking:
    def __init__(self, num_envs: int) -> None:
        self.sums = np.zeros((num_envs, len(SUMS)))
        self.steps = np.zeros(num_envs, dtype=np.int64)
        self.ended: list[np.ndarray] = []  # per ended episode: means of SUMS
        self.fell: list[bool] = []

    def step(
        self, infos: dict[str, Any], terminations: np.ndarray, truncations: np.ndarray
    ) -> None:
        done = terminations | truncations
        measured = _step_values(infos)
        if done.any() and measured is not None:
            final = _step_values(infos.get("final_info", {}))
            if final is not None:  # the ended envs' last step is in final_info
                measured[done] = final[done]
        if measured is not None:
            self.sums += measured
            self.steps += 1
        for i in np.flatnonzero(done):
            if measured is not None:
                self.ended.append(self.sums[i] / max(self.steps[i], 1))
            self.fell.append(bool(terminations[i]))
            self.sums[i] = 0.0
            self.steps[i] = 0

    def metrics(self) -> dict[str, float]:
        """Means over the episodes that ended since the last call (none: no keys)."""
        out: dict[str, float] = {}
        if self.fell:
            out["episodic_fall_rate"] = float(np.mean(self.fell))
        if self.ended:
            means = np.mean(self.ended, axis=0)
            out.update({f"episodic_{name}": float(v) for name, v in zip(SUMS, means, strict=True)})
        self.ended, self.fell = [], []
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"sums": torch.from_numpy(self.sums.copy()), "steps": torch.from_numpy(self.steps)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.sums = state["sums"].numpy().copy()
        self.steps = state["steps"].numpy().copy()


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
