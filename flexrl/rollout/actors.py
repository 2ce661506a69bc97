"""Policies as actors: what the rollout loop asks for actions, batched over env slots.

    class Actor(Protocol):
        def reset(self, slot) -> None                          # a new episode starts there
        def act(self, slots, obs, goals, rngs) -> np.ndarray   # actions [n, act_dim]
        def observe(self, slots, rewards) -> None              # what those actions earned

`slots` are the env slots of the running episodes the call is about (n of them), `obs` their
observations [n, obs_dim] as the env gives them, `goals` the command each step is rewarded
against [n, goal_dim] (the env's `info["goal"]`; None for envs without goals) and `rngs` each
episode's own generator, so random and noisy actions do not depend on which slot ran an
episode or what else ran beside it. Stateless policies (PPO, BC, random) ignore `reset` and
`observe`; the Decision Transformer (flexrl.offline.actors) keeps a context per slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import gymnasium as gym

    from flexrl.rl.agent import Policy


class Actor(Protocol):
    """What the rollout loop needs from a policy (see the module docstring)."""

    def reset(self, slot: int) -> None: ...

    def act(
        self,
        slots: Sequence[int],
        obs: np.ndarray,
        goals: np.ndarray | None,
        rngs: Sequence[np.random.Generator],
    ) -> np.ndarray: ...

    def observe(self, slots: Sequence[int], rewards: np.ndarray) -> None: ...


class StatelessActor:
    """An actor with no per-episode state: subclasses define `act` only."""

    def reset(self, slot: int) -> None:
        pass

    def observe(self, slots: Sequence[int], rewards: np.ndarray) -> None:
        pass


class RandomActor(StatelessActor):
    """Uniform actions in the bounds of a Box action space, from each episode's generator."""

    def __init__(self, space: gym.spaces.Box) -> None:
        self.low, self.high, self.dtype = space.low, space.high, space.dtype

    def act(
        self,
        slots: Sequence[int],
        obs: np.ndarray,
        goals: np.ndarray | None,
        rngs: Sequence[np.random.Generator],
    ) -> np.ndarray:
        return np.stack([rng.uniform(self.low, self.high) for rng in rngs]).astype(self.dtype)


class PPOActor(StatelessActor):
    """A PPO `Policy`: the Gaussian's mean, plus Gaussian noise of `noise` (action units), or a
    sample from the policy's own Gaussian (`stochastic`); clipped to the action bounds as in
    training, in the dtype of the env's action `space`. The noise comes from each episode's
    generator."""

    def __init__(
        self, policy: Policy, space: gym.spaces.Box, noise: float = 0.0, stochastic: bool = False
    ) -> None:
        self.policy = policy
        self.dtype = space.dtype  # the env's, as stored by collect
        self.noise = noise
        self.stochastic = stochastic

    def act(
        self,
        slots: Sequence[int],
        obs: np.ndarray,
        goals: np.ndarray | None,
        rngs: Sequence[np.random.Generator],
    ) -> np.ndarray:
        import torch

        policy = self.policy
        with torch.no_grad():
            x = torch.as_tensor(policy.obs_normalizer(obs), device=policy.device)
            mean = policy.agent.actor_mean(x).cpu().numpy()
            std = policy.agent.actor_logstd.exp().cpu().numpy().astype(np.float64)
        if self.stochastic or self.noise > 0:
            scale = std if self.stochastic else self.noise
            eps = np.stack([rng.standard_normal(mean.shape[1]) for rng in rngs])
            mean = mean.astype(np.float64) + scale * eps
        return np.clip(mean, policy.action_low, policy.action_high).astype(self.dtype)
