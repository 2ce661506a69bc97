"""Hindsight instructions: goal commands said back in words, and `flexrl data relabel`."""

from __future__ import annotations

import numpy as np
import pytest

from flexrl.language.parser import parse
from flexrl.language.relabel import command_phrase, instruction_for
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


@pytest.mark.parametrize(
    "command", [(0.3, 0.0, 0.0), (0.8, 0.0, 0.0), (0.0, 0.0, 0.5), (0.0, 0.0, 0.0)]
)
def test_the_parser_reads_what_relabelling_writes(command):
    assert parse(command_phrase(np.array(command))).command == pytest.approx(command)


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
