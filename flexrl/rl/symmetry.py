"""The mirror-symmetry loss of `ppo.mirror_coef`, after Yu, Turk and Liu 2018 ("Learning
Symmetric and Low-Energy Locomotion"): the policy's mean action in the mirrored state should be
the mirror of its mean action in the state itself (flexrl.envs.mirror). The loss is the squared
distance to the nearest mean that the env's action clipping makes that same action, averaged
over a minibatch's states and the actions' values: the policies saturate (means of +-2 where the
Humanoid clips at +-0.4), and a plain squared difference spends the network on differences
that clipping erases.

PPO alone learns whatever gait it first finds, and the gait it finds is lopsided: every policy
turned left better than right. The loss asks one gait of both sides. Only the mirrored side
learns (the state's own action is the target, held fixed): the states are where the policy
acts, so what it does there is what PPO taught it, while a lopsided gait rarely visits their
mirror images, where the policy's actions are untried. Data augmentation with mirrored
transitions teaches the same (Mittal et al. 2024 found it the better of the two); this is the
cheaper form, with no log-probabilities of mirrored actions to get right.

The minibatch holds observations as the policy saw them, normalised. The mirror acts on raw
observations, and normalisation is affine per value, so the mirror in normalised units is
affine too: n'_i = n_p(i) * sign_i * std_p(i) / std_i + (sign_i * mean_p(i) - mean_i) / std_i,
with the normaliser's statistics of the update (`refresh` takes them). Nothing to store beside
the rollout, nothing to add to checkpoints: a resumed run computes the same loss.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from flexrl.envs.mirror import action_mirror, observation_mirror
from flexrl.rl.normalization import ObsNormalizer

# The skills a mirror turns into each other (the rest mirror to themselves).
MIRROR_TASK = {"turn_left": "turn_right", "turn_right": "turn_left"}


class MirrorLoss:
    def __init__(self, obs_dim: int, action_bound: np.ndarray, device: torch.device) -> None:
        self.obs_perm_np, self.obs_sign = observation_mirror(obs_dim)
        act_perm, act_sign = action_mirror()
        self.device = device
        self.obs_perm = torch.from_numpy(self.obs_perm_np).to(device)
        self.act_perm = torch.from_numpy(act_perm).to(device)
        self.act_sign = torch.from_numpy(act_sign).float().to(device)
        self.bound = torch.as_tensor(action_bound, dtype=torch.float32, device=device)
        if not torch.equal(self.bound[self.act_perm], self.bound):
            raise ValueError("the mirror needs the same action bounds on both sides")
        self.scale = torch.from_numpy(self.obs_sign).float().to(device)
        self.shift = torch.zeros_like(self.scale)
        self.clip = float("inf")

    def refresh(self, normalizer: ObsNormalizer) -> None:
        """Take the normaliser's current statistics (once per update, before the minibatches)."""
        if not normalizer.enabled:
            return
        perm = self.obs_perm_np
        mean = normalizer.rms.mean
        std = np.sqrt(normalizer.rms.var + normalizer.epsilon)
        self.scale = torch.from_numpy(self.obs_sign * std[perm] / std).float().to(self.device)
        self.shift = torch.from_numpy((self.obs_sign * mean[perm] - mean) / std).float()
        self.shift = self.shift.to(self.device)
        self.clip = normalizer.clip

    def mirror_observations(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised observations [B, obs_dim] of the mirrored states."""
        return torch.clamp(x[:, self.obs_perm] * self.scale + self.shift, -self.clip, self.clip)

    def __call__(self, actor_mean: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = actor_mean(x)[:, self.act_perm] * self.act_sign  # mirrored: Ms's target
            # The means that clip to the target's action: [t, t] inside the bounds, beyond one
            # of them [bound, inf) or (-inf, -bound].
            inf = torch.full_like(target, float("inf"))
            low = torch.where(target <= -self.bound, -inf, target.clamp(max=self.bound))
            high = torch.where(target >= self.bound, inf, target.clamp(min=-self.bound))
        mean = actor_mean(self.mirror_observations(x))
        return ((mean - torch.clamp(mean, low, high).detach()) ** 2).mean()


def mirror_policy(state: dict[str, Any]) -> dict[str, Any]:
    """A PPO checkpoint's policy of the mirror-image body: in every state it does what the
    source does in the mirrored state, mirrored (a turn_left policy turns right), with the
    recipe's tasks swapped to match. Exact, as a change of variables: the observation
    normaliser's statistics and the first layers' input columns are permuted (and signed) as
    the observation mirror says, the actor's outputs and log-std as the action mirror says, so
    the mirrored policy is an ordinary network of the same shape. The critic reads the mirrored
    state too (a symmetric task's value is the same there). Training state (optimiser, envs,
    RNG) is dropped: the result is for acting, or for `ppo.init_from`. The recipe is mirrored
    as well: turn_left and turn_right swap, and the goal's sideways and turning ranges flip."""
    obs_perm, obs_sign = (torch.from_numpy(a) for a in observation_mirror(state["obs_dim"]))
    act_perm, act_sign = (torch.from_numpy(a) for a in action_mirror())
    agent = dict(state["agent"])
    for key in ("critic.0.weight", "actor_mean.0.weight"):
        # the source reads the mirror of what the new network is given: sign_j x_perm(j)
        agent[key] = agent[key][:, obs_perm] * obs_sign.to(agent[key].dtype)
    last = max(int(k.split(".")[1]) for k in agent if k.startswith("actor_mean."))
    last, bias = f"actor_mean.{last}.weight", f"actor_mean.{last}.bias"
    agent[last] = agent[last][act_perm] * act_sign.to(agent[last].dtype)[:, None]
    agent[bias] = agent[bias][act_perm] * act_sign.to(agent[bias].dtype)
    agent["actor_logstd"] = agent["actor_logstd"][:, act_perm]
    rms = dict(state["obs_rms"])
    rms["mean"] = rms["mean"][obs_perm] * obs_sign.to(rms["mean"].dtype)
    rms["var"] = rms["var"][obs_perm]
    bounds = [torch.as_tensor(state[k]) for k in ("action_low", "action_high")]
    if not all(torch.equal(b[act_perm], b) for b in bounds):
        raise ValueError("the mirror needs the same action bounds on both sides")
    recipe = copy.deepcopy(state["recipe"])
    env = recipe["env"]
    env["task"] = MIRROR_TASK.get(env["task"], env["task"])
    env["task_weights"] = {MIRROR_TASK.get(t, t): w for t, w in env["task_weights"].items()}
    command = env.get("command", {})  # goal commands [vx, vy, yaw_rate]: the last two flip
    for key in ("vy_range", "yaw_rate_range"):
        if key in command:
            low, high = command[key]
            command[key] = [-high, -low]
    if command.get("schedule"):
        command["schedule"] = [[vx, -vy, -yaw] for vx, vy, yaw in command["schedule"]]
    keep = ("format", "global_step", "obs_dim", "act_dim", "action_low", "action_high")
    return {**{k: state[k] for k in keep}, "recipe": recipe, "agent": agent, "obs_rms": rms}
