"""Running observation normalisation and reward scaling, as CleanRL's gym wrappers do them.

They live in the learner rather than in gym wrappers so that their statistics are part of the
checkpoint (a resumed run and `load_policy` see exactly the statistics training had).
"""

from __future__ import annotations

import numpy as np
import torch


class RunningMeanStd:
    """Mean and variance of a stream of batches (parallel algorithm of Chan et al.), float64."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = epsilon  # as gymnasium: a tiny prior count avoids dividing by zero

    def update(self, batch: np.ndarray) -> None:
        batch_mean, batch_var, batch_count = batch.mean(axis=0), batch.var(axis=0), batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = (
            self.var * self.count
            + batch_var * batch_count
            + delta**2 * self.count * batch_count / total
        )
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, torch.Tensor | float]:
        return {
            "mean": torch.from_numpy(np.array(self.mean, np.float64)),
            "var": torch.from_numpy(np.array(self.var, np.float64)),
            "count": float(self.count),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor | float]) -> None:
        assert isinstance(state["mean"], torch.Tensor) and isinstance(state["var"], torch.Tensor)
        self.mean = state["mean"].numpy().astype(np.float64)
        self.var = state["var"].numpy().astype(np.float64)
        self.count = float(state["count"])


class ObsNormalizer:
    """(obs - mean) / std, clipped; statistics updated only while training."""

    def __init__(
        self, shape: tuple[int, ...], clip: float, enabled: bool = True, epsilon: float = 1e-8
    ):
        self.rms = RunningMeanStd(shape)
        self.clip = clip
        self.enabled = enabled
        self.epsilon = epsilon

    def __call__(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        if not self.enabled:
            return obs.astype(np.float32)
        if update:
            self.rms.update(obs)
        normed = (obs - self.rms.mean) / np.sqrt(self.rms.var + self.epsilon)
        return np.clip(normed, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor | float]:
        return self.rms.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor | float]) -> None:
        self.rms.load_state_dict(state)


class RewardScaler:
    """Divide rewards by the running std of each env's discounted return, then clip.

    This keeps the value targets of different tasks on a similar scale without shifting the
    reward (a shift would change which policy is optimal when episodes end early).
    """

    def __init__(
        self, num_envs: int, gamma: float, clip: float, enabled: bool = True, epsilon: float = 1e-8
    ):
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(num_envs, np.float64)
        self.gamma = gamma
        self.clip = clip
        self.enabled = enabled
        self.epsilon = epsilon

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return rewards.astype(np.float32)
        self.returns = self.returns * self.gamma + rewards
        self.rms.update(self.returns)
        self.returns[dones] = 0.0  # a new episode starts its discounted return from zero
        scaled = rewards / np.sqrt(self.rms.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, object]:
        return {"rms": self.rms.state_dict(), "returns": torch.from_numpy(self.returns.copy())}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state["rms"])
        self.returns = state["returns"].numpy().astype(np.float64)


class ValueNormalizer:
    """Value targets as (return - mean) / std of the returns seen so far (sample-factory's
    normalize_returns): the critic predicts normalised values, so its loss keeps one scale while
    returns grow from a falling body's 50 to a walker's 3000. `denormalize` turns its outputs
    back into returns for GAE; the statistics only change in `update`, once per batch."""

    def __init__(self, enabled: bool = True, epsilon: float = 1e-8):
        self.rms = RunningMeanStd(())
        self.enabled = enabled
        self.epsilon = epsilon

    def update(self, returns: torch.Tensor) -> None:
        if self.enabled:
            self.rms.update(returns.double().cpu().numpy().reshape(-1))

    def _scale(self) -> tuple[float, float]:
        return float(self.rms.mean), float(np.sqrt(self.rms.var + self.epsilon))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        mean, std = self._scale()
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        mean, std = self._scale()
        return x * std + mean

    def state_dict(self) -> dict[str, torch.Tensor | float]:
        return self.rms.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor | float]) -> None:
        self.rms.load_state_dict(state)
