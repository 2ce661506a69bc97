"""Hindsight instructions: goal commands said back in words, and `flexrl data relabel`."""

from __future__ import annotations

import numpy as np
import pytest

from flexrl.language.grammar import command_phrase
from flexrl.language.parser import OutOfDomain, parse
from flexrl.language.relabel import instruction_for
from flexrl.store import ShardWriter, make_episode, open_dataset


def test_commands_in_words():
    assert command_phrase(np.zeros(3)) == "stop"
    assert (
        command_phrase([0.62, 0.0, 0.3])
        == "walk forward at 0.62 m/s while turning left at 0.30 rad/s"
    )
    assert (
        command_phrase([-0.2, -0.1, 0.0])
        == "walk backwards at 0.20 m/s drifting to the right at 0.10 m/s"
    )
    assert command_phrase([0.0, 0.0, -0.5]) == "turn right at 0.50 rad/s"
    goals = np.repeat([[0.5, 0, 0], [0, 0, 0]], [3, 2], axis=0)
    assert instruction_for(goals) == "walk forward at 0.50 m/s, then stop"


def test_the_parser_reads_what_relabelling_writes():
    rng = np.random.default_rng(0)
    commands = np.round(rng.uniform([-0.3, -0.2, -0.5], [1.0, 0.2, 0.5], (200, 3)), 2)
    commands *= rng.integers(0, 2, commands.shape)  # some components not asked
    commands[np.abs(commands) < 0.05] = 0.0
    for command in [*commands, (0.5, 0.0, -0.2), (0.0, 0.0, -0.5), (0.0, 0.0, 0.0)]:
        text = command_phrase(command)
        assert parse(text).command == pytest.approx(tuple(command)), text
    # the syntax with other decimals reads too; beyond the skills it is refused
    assert parse("Turn right at 0.3 rad/s").command == pytest.approx((0.0, 0.0, -0.3))
    with pytest.raises(OutOfDomain, match=r"turning at up to 0\.5 rad/s"):
        parse("walk forward at 0.5 m/s while turning left at 2 rad/s")


def test_data_relabel(cli, workspace):
    goals = [np.tile([0.4, 0.0, 0.0], (6, 1)), np.repeat([[0.0, 0.0, 0.3], [0, 0, 0]], 3, axis=0)]
    with ShardWriter("plain", workspace, durable=False) as writer:
        for g in goals:
            writer.add(make_episode(np.zeros((7, 2)), np.zeros((6, 1)), np.ones(6), [False] * 6,
                                    [False] * 5 + [True], goals=g, seed=1))  # fmt: skip
    result = cli("data", "relabel", "plain@v1", "--name", "plain-told", "-w", str(workspace))
    assert result.returncode == 0, result.stderr
    told = open_dataset("plain-told", workspace)
    assert told.episode_instructions.tolist() == [
        "walk forward at 0.40 m/s", "turn left at 0.30 rad/s, then stop",
    ]  # fmt: skip
    np.testing.assert_array_equal(
        told.array("goals"), open_dataset("plain", workspace).array("goals")
    )
    runs = sorted((workspace / "runs").iterdir())
    # into itself, or from data without commands: one line, exit 2, nothing recorded
    result = cli("data", "relabel", "plain@v1", "--name", "plain", "-w", str(workspace))
    assert result.returncode == 2 and "another name" in result.stderr
    with ShardWriter("no-goals", workspace, durable=False) as writer:
        writer.add(make_episode(np.zeros((2, 2)), np.zeros((1, 1)), [0.0], [True], [False]))
    result = cli("data", "relabel", "no-goals", "--name", "x", "-w", str(workspace))
    assert result.returncode == 2 and "no goal commands" in result.stderr
    assert sorted((workspace / "runs").iterdir()) == runs
