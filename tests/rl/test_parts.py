"""The pieces PPO is built from, checked against hand computations."""

from __future__ import annotations

import csv
import io
import random

import numpy as np
import pytest
import torch

from flexrl.config import TASKS, EnvConfig, TrainRecipe, validate_recipe
from flexrl.rl import train_ppo
from flexrl.rl.checkpoint import get_rng_state, set_rng_state
from flexrl.rl.envs import make_vector_env
from flexrl.rl.normalization import ObsNormalizer, RewardScaler, RunningMeanStd
from flexrl.rl.ppo import bootstrap_truncated, compute_gae
from flexrl.rl.tracking import CommandTracking
from flexrl.workspace import Workspace


def test_gae_matches_a_hand_computation_and_cuts_at_episode_ends():
    # One env, three steps; obs[2] starts a new episode (dones[2] = 1), so step 1 must not
    # bootstrap from values[2], while step 2 bootstraps from next_value.
    gamma, lam = 0.9, 0.5
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [2.0]])
    dones = torch.tensor([[0.0], [0.0], [1.0]])
    next_value, next_done = torch.tensor([[4.0]]), torch.tensor([0.0])

    adv, ret = compute_gae(rewards, values, dones, next_value, next_done, gamma, lam)

    d2 = 3.0 + gamma * 4.0 - 2.0
    d1 = 2.0 - 1.0  # episode ended: no gamma * V(next)
    d0 = 1.0 + gamma * 1.0 - 0.5
    expected = torch.tensor([[d0 + gamma * lam * d1], [d1], [d2]])
    assert torch.allclose(adv, expected)
    assert torch.allclose(ret, expected + values)

    # With next_done the last step does not bootstrap either.
    adv, _ = compute_gae(rewards, values, dones, next_value, torch.tensor([1.0]), gamma, lam)
    assert adv[2, 0].item() == pytest.approx(3.0 - 2.0)


def test_running_mean_std_equals_numpy_over_all_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (1, 7, 50)]
    rms = RunningMeanStd((4,), epsilon=0.0)
    for batch in batches:
        rms.update(batch)
    everything = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, everything.mean(0))
    np.testing.assert_allclose(rms.var, everything.var(0))


def test_obs_normalizer_clips_and_only_updates_when_asked():
    norm = ObsNormalizer((2,), clip=5.0)
    norm(np.array([[0.0, 0.0], [2.0, 2.0]]), update=True)
    mean = norm.rms.mean.copy()
    out = norm(np.array([[1000.0, -1000.0]]))
    assert out.dtype == np.float32 and out.tolist() == [[5.0, -5.0]]
    assert np.array_equal(norm.rms.mean, mean)


def test_reward_scaler_divides_by_return_std_and_resets_on_done():
    scaler = RewardScaler(num_envs=2, gamma=0.5, clip=10.0)
    scaler(np.array([1.0, 1.0]), np.array([False, True]))
    assert scaler.returns.tolist() == [1.0, 0.0]  # env 1's episode ended
    scaler(np.array([1.0, 1.0]), np.array([False, False]))
    assert scaler.returns.tolist() == [1.5, 1.0]
    out = scaler(np.array([4.0, -4.0]), np.array([False, False]))
    std = np.sqrt(scaler.rms.var + scaler.epsilon)
    np.testing.assert_allclose(out, np.array([4.0, -4.0]) / std, rtol=1e-6)


def test_rng_states_survive_a_weights_only_round_trip():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    buffer = io.BytesIO()
    torch.save(get_rng_state(), buffer)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_truncated_episodes_bootstrap_from_their_final_observation_terminated_do_not():
    # Real vector envs: env 0 is cut by its time limit after 3 steps; env 1 starts with the
    # pole past 0.2 rad, so its first step terminates. Both autoreset in the same step.
    envs = make_vector_env(EnvConfig(id="InvertedPendulum-v5", num_envs=2, max_episode_steps=3))
    envs.reset(seed=[0, 1])
    envs.envs[1].unwrapped.set_state(np.array([0.0, 0.5]), np.zeros(2))
    seen: list[np.ndarray] = []

    def value_of(raw_obs: np.ndarray) -> np.ndarray:
        seen.append(raw_obs)
        return np.full(len(raw_obs), 10.0)

    results = []
    for _ in range(3):
        obs, reward, terminated, truncated, infos = envs.step(np.zeros((2, 1)))
        results.append(bootstrap_truncated(reward, terminated, truncated, infos, value_of, 0.9))
    assert terminated.tolist() == [False, False] and truncated.tolist() == [True, False]
    assert [r.tolist() for r in results] == [[1.0, 0.0], [1.0, 1.0], [1.0 + 0.9 * 10.0, 1.0]]
    # V was asked once, for env 0's last observation, not the reset observation replacing it.
    (final,) = seen
    assert np.array_equal(final, infos["final_obs"][0][None]) and not np.array_equal(
        final[0], obs[0]
    )


def test_init_from_gives_inputs_the_source_never_saw_vary_the_spread_of_the_new_ones(tmp_path):
    """A walker always saw the command [1, 0, 0]: a fine-tune that draws commands takes their
    statistics from its first observations, so a command moves the normalised input as much as
    any other input moves (with unit variance, vx in [0.5, 1] would spread 0.14)."""
    from flexrl.rl.agent import Agent
    from flexrl.rl.checkpoint import FORMAT
    from flexrl.rl.normalization import ValueNormalizer
    from flexrl.rl.ppo import _init_from_policy
    from flexrl.workspace import Artifact, ArtifactKind

    source = ObsNormalizer((3,), clip=10.0)
    seen = np.tile([[0.0, 1.0, 0.0], [2.0, 1.0, 0.0]], (50_000, 1))  # dims 1, 2 constant
    source.rms.update(seen)
    agent = Agent(3, 1, hidden_sizes=[4])
    path = tmp_path / "source.pt"
    recipe = TrainRecipe(name="source", env=EnvConfig(id="InvertedPendulum-v5"))
    state = {
        "format": FORMAT,
        "recipe": recipe.model_dump(mode="json"),
        "agent": agent.state_dict(),
        "obs_rms": source.state_dict(),
    }
    torch.save(state, path)

    class Run:  # what _init_from_policy records: its input
        def add_input(self, artifact):
            self.input = artifact

    new = ObsNormalizer((3,), clip=10.0)
    first = np.array([[5.0, 0.5, -0.2], [7.0, 1.0, 0.2], [9.0, 0.75, 0.0]])
    artifact = Artifact(kind=ArtifactKind.FILE, ref=str(path))
    _init_from_policy(Run(), recipe, path, artifact, Agent(3, 1, hidden_sizes=[4]), new,
                      ValueNormalizer(enabled=False), first)  # fmt: skip
    np.testing.assert_allclose(new.rms.mean, [1.0, 0.75, 0.0], atol=1e-6)  # dim 0: the source's
    np.testing.assert_allclose(new.rms.var, [1.0, first[:, 1].var(), first[:, 2].var()], rtol=1e-5)
    assert np.abs(new(first)[:, 1:]).max() > 1.0  # spread like a unit-variance input


def test_a_policy_widened_for_tracking_acts_as_before_and_normalises_them_as_goals():
    """init_from a policy without env.observe_tracking: the 6 new inputs get zero weights (the
    same actions and values whatever they read) and the goal's statistics."""
    from flexrl.envs import GOAL_SLICE
    from flexrl.rl.agent import Agent
    from flexrl.rl.checkpoint import widen_for_tracking

    rng = np.random.default_rng(0)
    source = ObsNormalizer((351,), clip=10.0)
    source.rms.update(rng.normal(2.0, 3.0, (500, 351)))
    agent = Agent(351, 17, hidden_sizes=[8, 8])
    wide = widen_for_tracking(
        {"agent": agent.state_dict(), "obs_rms": source.state_dict(), "obs_dim": 351}
    )
    assert wide["obs_dim"] == 357
    wide_agent = Agent(357, 17, hidden_sizes=[8, 8])
    wide_agent.load_state_dict(wide["agent"])
    normalizer = ObsNormalizer((357,), clip=10.0)
    normalizer.load_state_dict(wide["obs_rms"])
    for key in ("mean", "var"):
        goal_stats = getattr(source.rms, key)[GOAL_SLICE]
        np.testing.assert_array_equal(getattr(normalizer.rms, key)[351:], np.tile(goal_stats, 2))
    obs = rng.normal(2.0, 3.0, (4, 351))
    widened = np.concatenate([obs, rng.normal(0.0, 1.0, (4, 6))], axis=1)
    x, wide_x = torch.as_tensor(source(obs)), torch.as_tensor(normalizer(widened))
    with torch.no_grad():
        torch.testing.assert_close(wide_agent.actor_mean(wide_x), agent.actor_mean(x))
        torch.testing.assert_close(wide_agent.get_value(wide_x), agent.get_value(x))


def test_widening_a_single_command_policy_gives_the_tracking_values_unit_variance():
    """zoo:walk_forward only ever saw [1, 0, 0]: the goal's variance is ~0, which would clip the
    measured velocities; they start at variance 1 around the command instead."""
    from flexrl.envs import GOAL_SLICE
    from flexrl.rl.agent import Agent
    from flexrl.rl.checkpoint import widen_for_tracking

    rng = np.random.default_rng(1)
    obs = rng.normal(0.0, 2.0, (300, 351))
    obs[:, GOAL_SLICE] = [1.0, 0.0, 0.0]
    source = ObsNormalizer((351,), clip=10.0)
    source.rms.update(obs)
    wide = widen_for_tracking(
        {"agent": Agent(351, 17, hidden_sizes=[8]).state_dict(), "obs_rms": source.state_dict(),
         "obs_dim": 351}
    )  # fmt: skip
    normalizer = ObsNormalizer((357,), clip=10.0)
    normalizer.load_state_dict(wide["obs_rms"])
    np.testing.assert_allclose(normalizer.rms.mean[351:], [1.0, 0.0, 0.0] * 2, atol=1e-6)
    np.testing.assert_array_equal(normalizer.rms.var[351:], np.ones(6))
    measured = np.concatenate([obs[:2], [[0.8, 0.1, -0.3] * 2, [1.2, -0.1, 0.2] * 2]], axis=1)
    assert np.abs(normalizer(measured)[:, 351:]).max() < 1.0  # near the command, not clipped


def test_command_tracking_averages_each_episode_and_splits_a_multitask_run_by_task():
    """Two envs: env 0 walks forward and falls after 2 steps, env 1 turns left and is cut at 3.
    The ended episodes' last step and task come from final_info (the infos of the step after
    an autoreset already belong to the new episode, here a goal episode)."""
    walk, turn, goal = (TASKS.index(t) for t in ("walk_forward", "turn_left", "goal"))

    def infos(vx, yaw, tasks):  # both envs asked for [1, 0, 0.5]
        return {
            "lin_vel": np.array([[vx[0], 0.0], [vx[1], 0.0]]),
            "yaw_rate": np.array(yaw, float),
            "goal": np.array([[1.0, 0.0, 0.5]] * 2),
            "task_id": np.array(tasks),
        }

    tracking = CommandTracking(2, per_task=True)
    no = np.zeros(2, bool)
    tracking.step(infos([0.6, 0.2], [0.5, 0.1], [walk, turn]), no, no)
    assert tracking.metrics() == {}  # nothing ended yet
    after = infos([9.0, 0.4], [9.0, 0.3], [goal, turn])
    ended = {**after, "final_info": infos([0.8, 0.4], [0.3, 0.3], [walk, turn])}
    tracking.step(ended, np.array([True, False]), no)
    after = infos([0.0, 9.0], [0.0, 9.0], [goal, goal])
    cut = {**after, "final_info": infos([0.0, 0.6], [0.0, 0.5], [goal, turn])}
    tracking.step(cut, no, np.array([False, True]))
    m = tracking.metrics()
    # walk: speeds 0.6, 0.8 (errors 0.4, 0.2), yaw errors 0, 0.2; turn: speeds 0.2, 0.4, 0.6,
    # yaw errors 0.4, 0.2, 0.
    assert m["episodic_forward_speed/walk_forward"] == pytest.approx(0.7)
    assert m["episodic_lin_vel_error/walk_forward"] == pytest.approx(0.3)
    assert m["episodic_yaw_rate_error/walk_forward"] == pytest.approx(0.1)
    assert m["episodic_fall_rate/walk_forward"] == 1.0
    assert m["episodic_forward_speed/turn_left"] == pytest.approx(0.4)
    assert m["episodic_yaw_rate_error/turn_left"] == pytest.approx(0.2)
    assert m["episodic_fall_rate/turn_left"] == 0.0
    assert m["episodic_forward_speed"] == pytest.approx(0.55)  # pooled over both episodes
    assert m["episodic_fall_rate"] == 0.5
    assert not any(k.endswith("/goal") for k in m)  # the goal episode has not ended
    single = CommandTracking(2)
    single.step(ended, np.array([True, False]), no)
    pooled = ("fall_rate", "forward_speed", "lin_vel_error", "yaw_rate_error")
    assert set(single.metrics()) == {f"episodic_{k}" for k in pooled}


def test_a_multitask_run_logs_each_tasks_curves(tmp_path):
    """Per-task columns beside the pooled ones in metrics.csv, from a real (tiny) training."""
    recipe = validate_recipe(
        {
            "name": "multi",
            "seed": 0,
            "env": {
                "task_weights": {"walk_forward": 1.0, "turn_left": 1.0, "goal": 0.0},
                "num_envs": 2,
                "max_episode_steps": 20,
            },
            "ppo": {"total_steps": 256, "num_steps": 64, "hidden_sizes": [16, 16]},
        },
        TrainRecipe,
    )
    with Workspace(tmp_path / "ws").start_run("train", "multi", recipe=recipe) as run:
        train_ppo(recipe, run, progress=False)
    with open(run.dir / "metrics.csv", newline="") as f:
        columns = set(next(csv.reader(f)))
    for task in ("walk_forward", "turn_left"):
        assert {f"episodic_fall_rate/{task}", f"episodic_forward_speed/{task}"} <= columns
    assert "episodic_fall_rate" in columns and not any(c.endswith("/goal") for c in columns)
