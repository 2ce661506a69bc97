"""Feedback on what the body did, instruction sequences over one episode, and
`flexrl eval --instruction` end to end on a shipped policy in real MuJoCo."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flexrl.config import EnvConfig
from flexrl.envs.tasks import at_command
from flexrl.language.feedback import Motion, describe, judge


def motion(vx=0.0, vy=0.0, yaw=0.0, fell=False, lin_err=0.1, yaw_err=0.1) -> Motion:
    return Motion(vx, vy, yaw, fell, 15.0, lin_err, yaw_err)


def test_descriptions_say_what_the_body_did():
    assert describe(motion()) == "stood still, did not fall"
    assert describe(motion(0.91, 0.15)) == (
        "walked forward at 0.91 m/s, drifted left, kept its heading, did not fall"
    )
    assert describe(motion(-0.2, yaw=-0.4)) == (
        "walked backwards at 0.20 m/s, turned right at 0.40 rad/s, did not fall"
    )
    assert describe(motion(0.02, yaw=0.5, fell=True)) == (
        "turned on the spot, turned left at 0.50 rad/s, fell after 15.0 s"
    )
    assert describe(motion(0.05, -0.3)).startswith("stepped to the right at 0.30 m/s")


def test_the_score_prefers_the_instruction_that_was_followed():
    walked = motion(0.95)
    assert judge("walk forward quickly", walked).similarity > judge("stop", walked).similarity
    assert (
        judge("turn left", motion(yaw=0.5)).similarity
        > judge("walk backwards", motion(yaw=0.5)).similarity
    )
    # success is the tracking errors within the skills' tolerances, and no fall
    assert judge("walk forward", motion(0.6, lin_err=0.2, yaw_err=0.15)).success
    assert not judge("walk forward", motion(0.6, lin_err=0.3)).success
    assert not judge("walk forward", motion(0.6, yaw_err=0.25)).success
    assert not judge("walk forward", motion(0.6, fell=True)).success


def test_an_instruction_sequence_is_a_command_schedule():
    from flexrl.envs import humanoid_kwargs
    from flexrl.envs.humanoid import HumanoidSkillEnv

    commands = [(0.5, 0.0, 0.0), (0.0, 0.0, 0.5), (0.0, 0.0, 0.0)]
    cfg = at_command(EnvConfig(task="goal"), commands, None, steps_each=4)
    env = HumanoidSkillEnv(**humanoid_kwargs(cfg))
    env.reset(seed=0)
    seen = []
    for _ in range(14):
        _, _, terminated, _, info = env.step(np.zeros(env.action_space.shape))
        seen.append(tuple(info["goal"]))
        assert not terminated
    env.close()
    assert seen == [commands[0]] * 4 + [commands[1]] * 4 + [commands[2]] * 6


def test_eval_with_instructions(cli, workspace, tmp_path):
    steps = "300"
    result = cli(
        "eval", "zoo:goal", "--instruction", "walk forward", "--instruction", "please stop",
        "--instruction-steps", steps, "--episodes", "1", "--json", "-w", str(workspace),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["settings"]["instructions"] == ["walk forward", "please stop"]
    (episode,) = report["episodes"]
    walk, stop = episode["feedback"]
    assert walk["description"].startswith("walked forward") and isinstance(stop["success"], bool)
    assert 0 <= report["summary"]["instruction_success"] <= 1
    assert "warning" not in result.stderr  # both commands lie in zoo:goal's ranges
    # out-of-domain text: one line, exit 2, and no run recorded
    (tmp_path / "plan.txt").write_text("walk forward\nmake me a sandwich\n")
    runs_before = sorted((workspace / "runs").iterdir())
    result = cli(
        "eval", "zoo:goal", "--instructions", str(tmp_path / "plan.txt"), "-w", str(workspace)
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "sandwich" in result.stderr
    assert sorted((workspace / "runs").iterdir()) == runs_before


@pytest.mark.parametrize("flags", [["--command", "0.5,0,0", "--instruction", "stop"]])
def test_conflicting_flags(cli, workspace, flags):
    result = cli("eval", "zoo:goal", *flags, "-w", str(workspace))
    assert result.returncode == 2 and "exclude each other" in result.stderr


def test_collect_with_instructions_stores_what_each_episode_was_told(cli, workspace, tmp_path):
    from flexrl.store import open_dataset

    plan = tmp_path / "plan.txt"
    plan.write_text("# one instruction per episode, in turn\nwalk forward slowly\n\nturn left\n")
    result = cli("collect", "--policy", "zoo:goal", "--dataset", "told", "--episodes", "3",
                 "--instructions", str(plan), "--seed", "5", "--num-envs", "3",
                 "-w", str(workspace))  # fmt: skip
    assert result.returncode == 0, result.stderr
    ds = open_dataset("told", workspace)
    meant = {"walk forward slowly": [0.3, 0.0, 0.0], "turn left": [0.0, 0.0, 0.5]}
    told = {e.seed: e.instruction for e in ds}
    assert told == {5: "walk forward slowly", 6: "turn left", 7: "walk forward slowly"}
    for episode in ds:  # held at what the words mean, the whole episode
        np.testing.assert_allclose(
            episode.goals, np.tile(meant[episode.instruction], (episode.length, 1))
        )
    # refused text: one line, exit 2, the dataset untouched
    result = cli("collect", "--policy", "zoo:goal", "--dataset", "told", "--episodes", "1",
                 "--instruction", "order a pizza", "-w", str(workspace))  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert open_dataset("told", workspace).version == 1
