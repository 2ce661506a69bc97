"""Which commands a policy never trained on: the goal task's ranges, and nothing otherwise."""

from __future__ import annotations

from flexrl.config import CommandConfig, EnvConfig
from flexrl.envs.tasks import untrained_commands


def test_commands_outside_the_goal_ranges_are_named():
    command = CommandConfig(vx_range=(0.0, 1.0), vy_range=(-0.2, 0.2), yaw_rate_range=(-0.5, 0.5))
    goal = EnvConfig(task="goal", command=command)
    inside = [(0.0, 0.0, 0.0), (1.0, 0.2, -0.5), (0.3, 0.0, 0.3)]
    outside = [(-0.3, 0.0, 0.0), (0.0, 0.3, 0.0), (0.5, 0.0, 0.6)]
    assert untrained_commands(goal, inside + outside) == outside
    multitask = goal.model_copy(update={"task": "walk_forward", "task_weights": {"goal": 1.0}})
    assert untrained_commands(multitask, outside) == outside
    # a policy that never drew goal commands has no ranges to be outside of
    walker = goal.model_copy(update={"task": "walk_forward"})
    assert untrained_commands(walker, outside) == []
