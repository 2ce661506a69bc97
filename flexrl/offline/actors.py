"""BC and DT policies as evaluation actors (the `Actor` protocol of flexrl.evaluation):

    reset() -> None                          a new episode starts
    act(obs, info) -> np.ndarray             action for one env's raw observation
    observe(reward, info) -> None            the reward the last action earned

Both load from a finetune run's `policy.pt` (`load_actor(path)`, weights_only=True) and act on
the raw observation: the dataset's normalisation lives inside the network as buffers.

Goal: read from `info["goal"]` (the command in force; flexrl's Humanoid puts it in every
info, the reset info included). Without it the last `goal_dim` observation values are used,
which is where flexrl's Humanoid appends the command, so the actors also work with a loop
that passes an empty info.

The DT keeps its context of the last K steps (return-to-go, observation, goal, action,
timestep). `reset` sets the return-to-go to the target return (recipe `dt.target_return`,
else the best return in the training data, or the `target_return` argument); `observe(r)`
decrements it by the reward. `observe_reward(r)` is the same without an info.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexrl.errors import FlexrlError
from flexrl.offline.checkpoint import build_network, load_policy_checkpoint


def _goal(obs: np.ndarray, info: dict[str, Any] | None, goal_dim: int) -> np.ndarray | None:
    if not goal_dim:
        return None
    goal = (info or {}).get("goal")
    if goal is None:
        goal = obs[-goal_dim:]
    goal = np.asarray(goal, dtype=np.float32).reshape(-1)
    if goal.shape != (goal_dim,):
        raise FlexrlError(f"the policy needs a goal of {goal_dim} values, got {goal.shape[0]}")
    return goal


class BCActor:
    """Stateless: the MLP's action for the current observation and goal."""

    def __init__(self, checkpoint: dict[str, Any]):
        if checkpoint["kind"] != "bc":
            raise FlexrlError(f"not a BC policy file (kind {checkpoint['kind']!r})")
        self.net = build_network(checkpoint)
        self.goal_dim = int(checkpoint["dataset"]["goal_dim"])

    def reset(self) -> None:
        pass

    @torch.no_grad()
    def act(self, obs: np.ndarray, info: dict[str, Any] | None = None) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32).reshape(-1)
        goal = _goal(obs, info, self.goal_dim)
        x = torch.from_numpy(obs)[None]
        g = None if goal is None else torch.from_numpy(goal)[None]
        return self.net(x, g)[0].numpy().astype(np.float64)

    def observe(self, reward: float, info: dict[str, Any] | None = None) -> None:
        pass


class DTActor:
    """Autoregressive Decision Transformer conditioned on a decreasing return-to-go."""

    def __init__(self, checkpoint: dict[str, Any], target_return: float | None = None):
        if checkpoint["kind"] != "dt":
            raise FlexrlError(f"not a DT policy file (kind {checkpoint['kind']!r})")
        self.net = build_network(checkpoint)
        dt = checkpoint["recipe"]["dt"]
        self.k = int(dt["context_len"])
        self.rtg_scale = float(dt["rtg_scale"])
        self.max_ep_len = int(dt["max_ep_len"])
        self.goal_dim = int(checkpoint["dataset"]["goal_dim"])
        self.act_dim = int(checkpoint["dataset"]["act_dim"])
        self.target_return = float(
            checkpoint["target_return"] if target_return is None else target_return
        )
        self.reset()

    def reset(self) -> None:
        self.return_to_go = self.target_return
        self.t = 0
        # One entry per step: (obs, goal, rtg / scale, timestep, action); the action of the
        # newest step is filled in by act.
        self.context: deque[list[Any]] = deque(maxlen=self.k)

    @torch.no_grad()
    def act(self, obs: np.ndarray, info: dict[str, Any] | None = None) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32).reshape(-1)
        goal = _goal(obs, info, self.goal_dim)
        zero = np.zeros(self.act_dim, np.float32)
        self.context.append([obs, goal, self.return_to_go / self.rtg_scale, self.t, zero])
        n = len(self.context)
        steps = list(self.context)
        # The window exactly as in training: left-padded to K with zeros, mask False there.
        pad = self.k - n
        obs_w = np.zeros((1, self.k, len(obs)), np.float32)
        act_w = np.zeros((1, self.k, self.act_dim), np.float32)
        rtg_w = np.zeros((1, self.k), np.float32)
        ts_w = np.zeros((1, self.k), np.int64)
        mask = np.zeros((1, self.k), bool)
        obs_w[0, pad:] = [s[0] for s in steps]
        act_w[0, pad:] = [s[4] for s in steps]
        rtg_w[0, pad:] = [s[2] for s in steps]
        ts_w[0, pad:] = [min(s[3], self.max_ep_len - 1) for s in steps]
        mask[0, pad:] = True
        goals = None
        if self.goal_dim:
            goal_w = np.zeros((1, self.k, self.goal_dim), np.float32)
            goal_w[0, pad:] = [s[1] for s in steps]
            goals = torch.from_numpy(goal_w)
        pred = self.net(
            torch.from_numpy(obs_w),
            torch.from_numpy(act_w),
            torch.from_numpy(rtg_w),
            torch.from_numpy(ts_w),
            torch.from_numpy(mask),
            goals,
        )
        action = pred[0, -1].numpy()
        self.context[-1][4] = action.astype(np.float32)
        self.t += 1
        return action.astype(np.float64)

    def observe(self, reward: float, info: dict[str, Any] | None = None) -> None:
        self.return_to_go -= float(reward)

    def observe_reward(self, reward: float) -> None:
        self.observe(reward)


def load_actor(path: str | Path, target_return: float | None = None) -> BCActor | DTActor:
    """The actor for a policy file (`policy.pt` of a finetune run)."""
    checkpoint = load_policy_checkpoint(path)
    if checkpoint["kind"] == "bc":
        return BCActor(checkpoint)
    return DTActor(checkpoint, target_return)
