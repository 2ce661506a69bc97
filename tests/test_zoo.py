"""Shipped policies (flexrl/zoo): they load, stay up and do their skill; zoo:NAME resolves."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import flexrl.envs  # noqa: F401  (registers the ids)
from flexrl import zoo
from flexrl.rl.checkpoint import load_policy

SHIPPED = zoo.names()
STEPS = 300  # 4.5 s of simulated time
DT = 0.015


def rollout(
    name: str, task: str, seed: int = 12345, command: tuple[float, float, float] | None = None
) -> dict[str, float]:
    """STEPS deterministic steps of `task` (or of the goal task held at `command`) from an
    eval-style seed never used in training, through the loop `flexrl eval` uses (one env: the
    policy's rows one at a time, as these margins were measured)."""
    from flexrl.envs.tasks import at_command
    from flexrl.rollout.loop import EpisodeSpec
    from flexrl.rollout.loop import rollout as roll
    from flexrl.rollout.slots import EnvSlots
    from flexrl.rollout.sources import load_policy_source
    from flexrl.workspace import Workspace

    source = load_policy_source(Workspace(Path("unused")), zoo.PREFIX + name)  # no run: a file
    env_cfg = source.env.model_copy(update={"task": task, "task_weights": {}})
    if command is not None:
        env_cfg = at_command(source.env, [command], None)
    slots = EnvSlots(env_cfg, 1)
    try:
        actor = source.make_actor(slots.action_space, 0.0, False)
        spec = EpisodeSpec(0, seed, task if command is None else "goal")
        (rolled,) = roll(slots, actor, [spec], max_steps=STEPS)
    finally:
        slots.close()
    episode, result = rolled.episode, rolled.result
    return {
        "steps": episode.length,
        "fell": result.terminated,
        "forward_m": result.distance,  # along the command, from positions
        "turned_rad": result.turned or 0.0,  # in the commanded direction, from headings
        "goal": episode.goals[0],
    }


def test_the_issue_skills_are_shipped():
    assert {"walk_forward", "turn_left", "turn_right", "goal", "multitask"} <= set(SHIPPED), SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_is_small_and_documented(name: str):
    path = zoo.zoo_path(zoo.PREFIX + name)
    assert path.stat().st_size < 4 * 2**20
    info = zoo.read_info(path)
    assert info["name"] == zoo.PREFIX + name and info["global_step"] > 0
    assert "recipe" in info and "seed" in info and info["eval"]["tasks"]


def over_seeds(name: str, task: str, command: tuple[float, float, float] | None = None):
    """Five episodes from eval-style seeds: where a fall comes differs between CPUs, and the
    multi-skill policies still fall in some episodes, so the tests judge the median episode."""
    results = [rollout(name, task, 12345 + k, command) for k in range(5)]
    return results, sum(r["fell"] for r in results)


def median(results: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in results]))


@pytest.mark.parametrize("name", [n for n in SHIPPED if n in ("walk_forward", "multitask")])
def test_walker_stays_up_and_walks_forward(name: str):
    results, falls = over_seeds(name, "walk_forward")
    assert falls <= 1, results
    # 1.0 m/s commanded: a third of it at least, along the start heading, over 4.5 s (the
    # walker goes 0.95 m/s, the multitask policy 0.87)
    assert median(results, "forward_m") > 0.35 * STEPS * DT, results


@pytest.mark.parametrize(
    ("name", "task", "sign"),
    [
        (n, t, s)
        for n in SHIPPED
        for t, s in (("turn_left", 1), ("turn_right", -1))
        if n in (t, "multitask")
    ],
)
def test_turner_stays_up_and_turns_its_way(name: str, task: str, sign: int):
    results, falls = over_seeds(name, task)
    assert falls <= 2, results
    assert all(np.sign(r["goal"][2]) == sign for r in results)
    # a quarter of the commanded angle at least, the commanded way, over 4.5 s (the turner
    # turns 80-90% of it over 15 s)
    assert median(results, "turned_rad") > 0.25 * abs(results[0]["goal"][2]) * STEPS * DT, results


@pytest.mark.parametrize(
    ("name", "yaw_rate"),
    [(n, w) for n in SHIPPED if n in ("goal", "multitask") for w in (0.4, -0.4)],
)
def test_command_follower_steers_the_way_it_is_told(name: str, yaw_rate: float):
    results, falls = over_seeds(name, "goal", command=(0.5, 0.0, yaw_rate))
    assert falls <= 3, results  # zoo:goal fell in 0-10% of 15 s episodes held at this command
    assert median(results, "turned_rad") > 0.25 * abs(yaw_rate) * STEPS * DT, results


def test_unknown_zoo_name_is_one_line_and_status_2(cli, workspace):
    result = cli("eval", "zoo:no_such_skill", "--workspace", str(workspace))
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown shipped policy 'zoo:no_such_skill'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_export_to_a_file_is_one_line_and_status_2(cli, workspace, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    result = cli("zoo", "export", "any", "x", "--to", str(taken), "--workspace", str(workspace))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --to {taken}: a file")
    assert len(result.stderr.strip().splitlines()) == 1
    assert taken.read_text() == "not a directory"


def train_tiny(cli, workspace, name: str, steps: int = 64, *sets: str) -> None:
    """A few PPO steps of the quickstart recipe (InvertedPendulum) as run NAME."""
    trained = cli(
        "train", "--config", "recipes/quickstart.yaml", "--name", name,
        "--set", f"ppo.total_steps={steps}", "--set", "env.num_envs=2", "--set", "ppo.num_steps=32",
        *sets, "--workspace", str(workspace),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr


def test_export_round_trip_acts_as_the_checkpoint(cli, workspace, tmp_path):
    """A training checkpoint exported to the zoo format acts exactly as it did; --to makes
    its directory."""
    train_tiny(cli, workspace, "tiny")
    report = tmp_path / "eval.json"
    evaluated = cli("eval", "tiny", "--episodes", "1", "--json", "--workspace", str(workspace))
    assert evaluated.returncode == 0, evaluated.stderr
    report.write_text(evaluated.stdout)
    exported = cli(
        "zoo", "export", "tiny", "tiny_skill", "--eval", str(report),
        "--to", str(tmp_path / "zoo"), "--workspace", str(workspace),
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    info = json.loads((tmp_path / "zoo" / "tiny_skill.json").read_text())
    assert info["run"]["name"] == "tiny" and info["eval"]["tasks"]
    checkpoint = next((workspace / "runs").glob("*tiny*/artifacts/final.pt"))
    shipped = load_policy(tmp_path / "zoo" / "tiny_skill.safetensors")
    original = load_policy(checkpoint)
    env = gym.make("InvertedPendulum-v5")
    obs, _ = env.reset(seed=0)
    for _ in range(50):
        a, b = original.act(obs), shipped.act(obs)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # float32 weights, as trained
        obs, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            obs, _ = env.reset()


def test_export_records_the_trainings_a_fine_tune_started_from(cli, workspace, tmp_path):
    """A fine-tune's JSON names each training behind it and the steps from nothing."""
    train_tiny(cli, workspace, "first")
    train_tiny(cli, workspace, "second", 128, "--set", "ppo.init_from=first")
    in_ws = ("--workspace", str(workspace))
    exported = cli("zoo", "export", "second", "tuned", "--to", str(tmp_path), *in_ws)
    assert exported.returncode == 0, exported.stderr
    info = json.loads((tmp_path / "tuned.json").read_text())
    (stage,) = info["lineage"]
    assert stage["run"]["name"] == "first" and stage["global_step"] == 64
    assert info["global_step"] == 128 and info["total_global_step"] == 192
    assert info["total_train_seconds"] == stage["train_seconds"] + info["train_seconds"] > 0
    # The parent gone from the workspace: still exported, the stage named, the totals unknown.
    next((workspace / "runs").glob("*first*/artifacts/final.pt")).unlink()
    exported = cli("zoo", "export", "second", "orphan", "--to", str(tmp_path), *in_ws)
    assert exported.returncode == 0, exported.stderr
    info = json.loads((tmp_path / "orphan.json").read_text())
    assert info["lineage"][0]["global_step"] is None and info["total_global_step"] is None


def test_export_mirror_ships_the_mirror_image_and_refuses_other_bodies(cli, workspace, tmp_path):
    """--mirror: zoo:turn_left exported as a right turner that acts as its mirror; a policy of
    another body is refused in one line, nothing written."""
    from flexrl.envs.mirror import action_mirror, mirror, observation_mirror

    args = ("--to", str(tmp_path), "--workspace", str(workspace))
    exported = cli("zoo", "export", "zoo:turn_left", "righty", "--mirror", *args)
    assert exported.returncode == 0, exported.stderr
    info = json.loads((tmp_path / "righty.json").read_text())
    assert info["exported_from"]["mirrored"] is True
    assert info["recipe"]["env"]["task"] == "turn_right"
    source, shipped = (
        load_policy(zoo.zoo_path("zoo:turn_left")),
        load_policy(tmp_path / "righty.safetensors"),
    )
    env = gym.make(
        "flexrl/HumanoidTurnRight-v0", observe_tracking=True, observation_frame="heading"
    )
    obs, _ = env.reset(seed=5)
    for _ in range(20):
        action = shipped.act(obs)
        expected = mirror(source.act(mirror(obs, observation_mirror(obs.size))), action_mirror())
        np.testing.assert_allclose(action, expected, atol=1e-5)
        obs, *_ = env.step(action)

    train_tiny(cli, workspace, "pendulum")
    refused = cli("zoo", "export", "pendulum", "mirrored", "--mirror", *args)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "Humanoid" in refused.stderr and not (tmp_path / "mirrored.json").exists()
