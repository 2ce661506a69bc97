"""The actor-critic network (CleanRL's Agent) and `Policy`, a trained agent ready to act."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from flexrl.rl.normalization import ObsNormalizer

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weights and zero bias, the initialisation PPO's published results use."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_dim: int, hidden_sizes: list[int], out_dim: int, out_std: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(in_dim, size)), nn.Tanh()]
        in_dim = size
    layers.append(layer_init(nn.Linear(in_dim, out_dim), std=out_std))
    return nn.Sequential(*layers)


class Agent(nn.Module):
    """Separate actor and critic MLPs; a Gaussian policy with a state-independent log-std."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: list[int]):
        super().__init__()
        self.critic = mlp(obs_dim, hidden_sizes, 1, out_std=1.0)
        # A small last layer starts the policy near a zero mean: no action is favoured at first.
        self.actor_mean = mlp(obs_dim, hidden_sizes, act_dim, out_std=0.01)
        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def get_action_and_value(
        self, x: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(action, log-prob, entropy, value); samples an action when none is given.

        The diagonal Gaussian written out with torch.distributions.Normal's formulas, in its
        order of operations (so results and gradients are the same, bit for bit), without
        building a distribution object per call: its argument checks cost more than the maths
        on PPO's small batches.
        """
        action_mean = self.actor_mean(x)
        action_std = self.actor_logstd.expand_as(action_mean).exp()
        if action is None:
            with torch.no_grad():  # Normal.sample
                action = torch.normal(action_mean, action_std)
        var = action_std**2  # Normal.log_prob
        log_std = action_std.log()
        logprob = -((action - action_mean) ** 2) / (2 * var) - log_std - _LOG_SQRT_2PI
        entropy = 0.5 + 0.5 * math.log(2 * math.pi) + torch.log(action_std)  # Normal.entropy
        return action, logprob.sum(1), entropy.sum(1), self.critic(x)


class Policy:
    """A trained agent with its observation normaliser and action bounds, for eval and collect.

    policy = load_policy("workspace/runs/<id>/artifacts/final.pt")
    action = policy.act(obs)              # obs: (obs_dim,) or (n, obs_dim), raw from the env
    """

    def __init__(
        self,
        agent: Agent,
        obs_normalizer: ObsNormalizer,
        action_low: np.ndarray,
        action_high: np.ndarray,
        device: torch.device | str = "cpu",
    ):
        self.agent = agent.to(device).eval()
        self.obs_normalizer = obs_normalizer
        self.action_low = action_low
        self.action_high = action_high
        self.device = torch.device(device)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions clipped to the action space; the Gaussian mean when deterministic."""
        single = obs.ndim == 1
        x = torch.as_tensor(self.obs_normalizer(np.atleast_2d(obs)), device=self.device)
        if deterministic:
            action = self.agent.actor_mean(x)
        else:
            action = self.agent.get_action_and_value(x)[0]
        action_np = np.clip(action.cpu().numpy(), self.action_low, self.action_high)
        return action_np[0] if single else action_np
