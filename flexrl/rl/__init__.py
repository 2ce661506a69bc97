"""PPO: `train_ppo` behind `flexrl train`, and `load_policy` for eval and collect.

ppo.py            the learner, CleanRL's ppo_continuous_action.py read top to bottom
agent.py          the actor-critic network and Policy (a trained agent ready to act)
normalization.py  running observation normalisation and reward scaling
envs.py           vectorised envs and their exact state for resuming
checkpoint.py     the checkpoint format, loading (weights_only) and finding a run's checkpoint
"""

from flexrl.rl.agent import Agent, Policy
from flexrl.rl.checkpoint import load_checkpoint, load_policy
from flexrl.rl.ppo import train_ppo

__all__ = ["Agent", "Policy", "load_checkpoint", "load_policy", "train_ppo"]
