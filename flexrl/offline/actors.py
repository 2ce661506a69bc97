"""BC and DT policies as rollout actors (the batched `Actor` protocol of flexrl.rollout.actors):

    reset(slot) -> None                          a new episode starts in env slot `slot`
    act(slots, obs, goals, rngs) -> actions      for the running slots' raw observations [n, d]
    observe(slots, rewards) -> None              the rewards those actions earned

Both load from a finetune run's `policy.pt` (`load_actor(path)`, weights_only=True) and act on
the raw observation: the dataset's normalisation lives inside the network as buffers.

Goal: the command each step is rewarded against (the env's `info["goal"]`, which the loop
passes as `goals`). Without it the last 3 observation values are used, which is where
flexrl's Humanoid appends the command. A policy trained on instructions (`data.condition:
instruction`) is given the embedding of the instruction that meant the command: the text
evaluation was told (`told`, command -> text), else the command said in words
(flexrl/language/relabel.py), as `flexrl data relabel` says it.

The DT keeps, per slot, its context of the last K steps (return-to-go, observation, goal,
action, timestep) and predicts for all running slots in one batch. `reset(slot)` sets the
slot's return-to-go to the target return (recipe `dt.target_return`, else the best return in
the training data, or the `target_return` argument); `observe` decrements it by the reward.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexrl.errors import FlexrlError
from flexrl.offline.checkpoint import build_network, load_policy_checkpoint

COMMAND_DIM = 3


class InstructionConditioner:
    """Commands [n, 3] -> embeddings [n, 384] of the instructions that meant them."""

    def __init__(self, told: Mapping[tuple[float, ...], str] | None = None):
        self.told = {_key(c): text for c, text in (told or {}).items()}
        self.embedded: dict[tuple[float, ...], np.ndarray] = {}

    def __call__(self, commands: np.ndarray) -> np.ndarray:
        from flexrl.language.encoder import encode
        from flexrl.language.grammar import command_phrase

        keys = [_key(c) for c in commands]
        new = {k: c for k, c in zip(keys, commands, strict=True) if k not in self.embedded}
        if new:  # every new command of this step in one batch (the encoder caches by text)
            texts = [self.told.get(k) or command_phrase(c) for k, c in new.items()]
            self.embedded.update(zip(new, encode(texts), strict=True))
        return np.stack([self.embedded[k] for k in keys])


def _key(command: Any) -> tuple[float, ...]:
    return tuple(round(float(x), 6) for x in command)


def _goals(
    obs: np.ndarray,
    goals: np.ndarray | None,
    goal_dim: int,
    conditioner: InstructionConditioner | None = None,
) -> np.ndarray | None:
    """[n, goal_dim] goals for the rows of `obs`, float32; None for a goal-less policy."""
    if not goal_dim:
        return None
    if goals is None:
        goals = obs[:, -(COMMAND_DIM if conditioner else goal_dim) :]
    goals = np.asarray(goals, dtype=np.float32).reshape(len(obs), -1)
    if conditioner is not None:
        goals = conditioner(goals)
    if goals.shape[1] != goal_dim:
        raise FlexrlError(f"the policy needs a goal of {goal_dim} values, got {goals.shape[1]}")
    return goals


def _conditioner(checkpoint: dict[str, Any], told: Mapping | None) -> InstructionConditioner | None:
    if checkpoint["dataset"].get("condition", "command") != "instruction":
        return None
    return InstructionConditioner(told)


class BCActor:
    """Stateless: the MLP's actions for the current observations and goals."""

    def __init__(self, checkpoint: dict[str, Any], told: Mapping | None = None):
        if checkpoint["kind"] != "bc":
            raise FlexrlError(f"not a BC policy file (kind {checkpoint['kind']!r})")
        self.net = build_network(checkpoint)
        self.goal_dim = int(checkpoint["dataset"]["goal_dim"])
        self.conditioner = _conditioner(checkpoint, told)

    def reset(self, slot: int) -> None:
        pass

    @torch.no_grad()
    def act(
        self,
        slots: Sequence[int],
        obs: np.ndarray,
        goals: np.ndarray | None = None,
        rngs: Sequence[np.random.Generator] = (),
    ) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32).reshape(len(slots), -1)
        goal = _goals(obs, goals, self.goal_dim, self.conditioner)
        g = None if goal is None else torch.from_numpy(goal)
        return self.net(torch.from_numpy(obs), g).numpy().astype(np.float64)

    def observe(self, slots: Sequence[int], rewards: np.ndarray) -> None:
        pass


class DTActor:
    """Autoregressive Decision Transformer conditioned on a decreasing return-to-go, one
    context per env slot."""

    def __init__(
        self,
        checkpoint: dict[str, Any],
        target_return: float | None = None,
        told: Mapping | None = None,
    ):
        if checkpoint["kind"] != "dt":
            raise FlexrlError(f"not a DT policy file (kind {checkpoint['kind']!r})")
        self.net = build_network(checkpoint)
        self.conditioner = _conditioner(checkpoint, told)
        dt = checkpoint["recipe"]["dt"]
        self.k = int(dt["context_len"])
        self.rtg_scale = float(dt["rtg_scale"])
        self.max_ep_len = int(dt["max_ep_len"])
        self.goal_dim = int(checkpoint["dataset"]["goal_dim"])
        self.act_dim = int(checkpoint["dataset"]["act_dim"])
        self.target_return = float(
            checkpoint["target_return"] if target_return is None else target_return
        )
        self.return_to_go: dict[int, float] = {}
        self.t: dict[int, int] = {}
        # Per slot, one entry per step: [obs, goal, rtg / scale, timestep, action]; the action
        # of the newest step is filled in by act.
        self.context: dict[int, deque[list[Any]]] = {}

    def reset(self, slot: int) -> None:
        self.return_to_go[slot] = self.target_return
        self.t[slot] = 0
        self.context[slot] = deque(maxlen=self.k)

    @torch.no_grad()
    def act(
        self,
        slots: Sequence[int],
        obs: np.ndarray,
        goals: np.ndarray | None = None,
        rngs: Sequence[np.random.Generator] = (),
    ) -> np.ndarray:
        n = len(slots)
        obs = np.asarray(obs, dtype=np.float32).reshape(n, -1)
        goal = _goals(obs, goals, self.goal_dim, self.conditioner)
        zero = np.zeros(self.act_dim, np.float32)
        # The windows exactly as in training: left-padded to K with zeros, mask False there.
        obs_w = np.zeros((n, self.k, obs.shape[1]), np.float32)
        act_w = np.zeros((n, self.k, self.act_dim), np.float32)
        rtg_w = np.zeros((n, self.k), np.float32)
        ts_w = np.zeros((n, self.k), np.int64)
        mask = np.zeros((n, self.k), bool)
        goal_w = np.zeros((n, self.k, self.goal_dim), np.float32)
        for row, slot in enumerate(slots):
            context = self.context[slot]
            g = None if goal is None else goal[row]
            rtg = self.return_to_go[slot] / self.rtg_scale
            context.append([obs[row], g, rtg, self.t[slot], zero])
            steps = list(context)
            pad = self.k - len(steps)
            obs_w[row, pad:] = [s[0] for s in steps]
            act_w[row, pad:] = [s[4] for s in steps]
            rtg_w[row, pad:] = [s[2] for s in steps]
            ts_w[row, pad:] = [min(s[3], self.max_ep_len - 1) for s in steps]
            mask[row, pad:] = True
            if goal is not None:
                goal_w[row, pad:] = [s[1] for s in steps]
        pred = self.net(
            torch.from_numpy(obs_w),
            torch.from_numpy(act_w),
            torch.from_numpy(rtg_w),
            torch.from_numpy(ts_w),
            torch.from_numpy(mask),
            None if goal is None else torch.from_numpy(goal_w),
        )
        actions = pred[:, -1].numpy().astype(np.float32)
        for row, slot in enumerate(slots):
            self.context[slot][-1][4] = actions[row]
            self.t[slot] += 1
        return actions.astype(np.float64)

    def observe(self, slots: Sequence[int], rewards: np.ndarray) -> None:
        for slot, reward in zip(slots, rewards, strict=True):
            self.return_to_go[slot] -= float(reward)


def load_actor(path: str | Path, target_return: float | None = None) -> BCActor | DTActor:
    """The actor for a policy file (`policy.pt` of a finetune run)."""
    checkpoint = load_policy_checkpoint(path)
    if checkpoint["kind"] == "bc":
        return BCActor(checkpoint)
    return DTActor(checkpoint, target_return)
