"""Behaviour Cloning: an MLP on (normalised observation, goal) with tanh-bounded actions,
mapped onto the dataset's action range.

Top-% BC (train on the best x% of episodes by return) is a data choice: the DataModule's
`top_percent`, so the module is the same for both.
"""

from __future__ import annotations

import torch
from torch import nn

from flexrl.config import BCConfig, FinetuneBCRecipe
from flexrl.offline.base import ActionScaler, ObsNormalizer, OfflinePolicyModule
from flexrl.offline.datamodule import DatasetInfo


class BCPolicy(nn.Module):
    """Raw observation (+ goal) -> action in the dataset's action range."""

    def __init__(self, info: DatasetInfo, cfg: BCConfig):
        super().__init__()
        self.normalizer = ObsNormalizer(info.obs_mean, info.obs_std)
        self.act_scaler = ActionScaler(info)
        self.goal_dim = info.goal_dim
        layers: list[nn.Module] = []
        width = info.obs_dim + info.goal_dim
        for hidden in cfg.hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            width = hidden
        layers += [nn.Linear(width, info.act_dim), nn.Tanh()]
        self.mlp = nn.Sequential(*layers)

    def forward(
        self, observations: torch.Tensor, goals: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.normalizer(observations)
        if self.goal_dim:
            if goals is None:
                raise ValueError("this policy is goal-conditioned: pass goals")
            x = torch.cat([x, goals], dim=-1)
        return self.act_scaler.denormalize(self.mlp(x))


class BCModule(OfflinePolicyModule):
    kind = "bc"

    def __init__(self, recipe: FinetuneBCRecipe, info: DatasetInfo):
        super().__init__(recipe, info)
        self.net = BCPolicy(info, recipe.bc)

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["observations"], batch.get("goals"))
