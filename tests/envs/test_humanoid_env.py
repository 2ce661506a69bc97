"""The Humanoid skill envs: registration, observation layout, goals, seeding, falls, multi-task."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from flexrl.config import EnvConfig, TrainRecipe, load_recipe
from flexrl.envs import GOAL_SLICE, MULTITASK_ID, TASK_IDS, TASKS, make_env, task_id

REPO = Path(__file__).resolve().parents[2]
EXPECTED_GOALS = {
    "walk_forward": [1.0, 0.0, 0.0],
    "turn_left": [0.0, 0.0, 0.5],
    "turn_right": [0.0, 0.0, -0.5],
}


@pytest.mark.parametrize("env_id", [*TASK_IDS.values(), MULTITASK_ID])
def test_every_id_registers_and_steps_with_the_goal_in_the_observation(env_id):
    env = gym.make(env_id)
    assert env.observation_space.shape == (351,)
    assert env.action_space.shape == (17,)
    obs, info = env.reset(seed=3)
    assert obs.shape == (351,) and env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[GOAL_SLICE], info["goal"])
    task = TASKS[info["task_id"]]
    if task in EXPECTED_GOALS:
        np.testing.assert_allclose(info["goal"], EXPECTED_GOALS[task])
    obs, reward, _, _, info = env.step(env.action_space.sample())
    assert obs.shape == (351,) and np.isfinite(reward)
    assert reward == pytest.approx(sum(info["reward_terms"].values()))
    assert {"goal", "task_id", "lin_vel", "yaw_rate", "reward_terms"} <= set(info)
    env.close()


def test_fixed_task_ids_report_their_task():
    for task, env_id in TASK_IDS.items():
        env = gym.make(env_id)
        assert env.reset(seed=0)[1]["task_id"] == task_id(task)
        env.close()


@pytest.mark.parametrize(
    ("env_id", "sign"), [(TASK_IDS["turn_left"], 1), (TASK_IDS["turn_right"], -1)]
)
def test_turning_while_walking_forward(env_id, sign):
    env = gym.make(env_id, command={"turn_speed": 0.4, "turn_rate": 0.7})
    _, info = env.reset(seed=0)
    np.testing.assert_allclose(info["goal"], [0.4, 0.0, sign * 0.7])
    env.close()


def test_goal_resamples_every_n_steps_and_is_reproducible_under_a_seed():
    def rollout(seed: int) -> tuple[np.ndarray, np.ndarray]:
        env = gym.make("flexrl/HumanoidGoal-v0", command={"resample_steps": 3})
        obs, info = env.reset(seed=seed)
        obs_goals, info_goals = [obs[GOAL_SLICE]], []
        for _ in range(9):
            obs, _, _, _, info = env.step(np.zeros(17))
            obs_goals.append(obs[GOAL_SLICE])
            info_goals.append(info["goal"])
        env.close()
        return np.array(obs_goals), np.array(info_goals)

    obs_goals, info_goals = rollout(seed=7)
    # A step is rewarded against the goal in the observation its action was chosen from.
    np.testing.assert_array_equal(info_goals, obs_goals[:-1])
    # obs after step k shows a new goal exactly when k is a multiple of 3.
    changed = [not np.array_equal(obs_goals[k], obs_goals[k - 1]) for k in range(1, 10)]
    assert changed == [False, False, True] * 3
    low, high = np.array([(-0.5, 1.5), (-0.5, 0.5), (-0.5, 0.5)]).T
    assert np.all((obs_goals >= low) & (obs_goals <= high))
    again, _ = rollout(seed=7)
    np.testing.assert_array_equal(obs_goals, again)
    other, _ = rollout(seed=8)
    assert not np.array_equal(obs_goals, other)


def test_goal_commands_standing_still_in_the_given_share():
    from flexrl.config import CommandConfig
    from flexrl.envs.tasks import sample_goal

    rng = np.random.default_rng(0)
    cfg = CommandConfig(still_prob=0.25)
    goals = np.array([sample_goal("goal", cfg, rng) for _ in range(4000)])
    still = np.all(goals == 0.0, axis=1)
    assert 0.22 < still.mean() < 0.28
    # the others are uniform draws, which are never exactly still
    assert np.all(np.any(goals[~still] != 0.0, axis=1))
    never = np.array([sample_goal("goal", CommandConfig(), rng) for _ in range(1000)])
    assert not np.any(np.all(never == 0.0, axis=1))


def test_command_curriculum_widens_from_its_start_to_the_full_ranges():
    from flexrl.config import CommandConfig
    from flexrl.envs.tasks import sample_goal

    cfg = CommandConfig(
        vx_range=(0.0, 1.0), vy_range=(-0.2, 0.2), yaw_rate_range=(-0.5, 0.5), still_prob=0.2,
        curriculum_steps=100, curriculum_start=(0.8, 0.0, 0.1),
    )  # fmt: skip

    def draws(progress: float) -> np.ndarray:
        rng = np.random.default_rng(1)
        return np.array([sample_goal("goal", cfg, rng, progress=progress) for _ in range(4000)])

    np.testing.assert_array_equal(draws(0.0), np.tile([0.8, 0.0, 0.1], (4000, 1)))
    half = draws(0.5)
    moving = half[np.any(half != 0.0, axis=1)]
    # each range is half the way from the start to its ends: vx 0.4..0.9, vy +-0.1, yaw -0.2..0.3
    np.testing.assert_allclose(moving.min(0), [0.4, -0.1, -0.2], atol=0.01)
    np.testing.assert_allclose(moving.max(0), [0.9, 0.1, 0.3], atol=0.01)
    assert 0.08 < np.mean(np.all(half == 0.0, axis=1)) < 0.12  # half the still share
    full = draws(1.0)
    np.testing.assert_allclose(full[np.any(full != 0.0, axis=1)].min(0), [0, -0.2, -0.5], atol=0.01)
    assert 0.18 < np.mean(np.all(full == 0.0, axis=1)) < 0.22
    # at full progress the draws are the ranges' own, whatever the curriculum says
    rng = np.random.default_rng(1)
    plain = cfg.model_copy(update={"curriculum_steps": 0, "curriculum_start": (0.0, 0.0, 0.0)})
    np.testing.assert_array_equal(full[:50], [sample_goal("goal", plain, rng) for _ in range(50)])


def test_training_draws_the_slow_end_in_its_share_and_nothing_else_does():
    from flexrl.config import CommandConfig
    from flexrl.envs.tasks import sample_goal

    cfg = CommandConfig(
        vx_range=(0.0, 1.0), vy_range=(-0.2, 0.2), yaw_rate_range=(-0.5, 0.5), still_prob=0.1,
        train_slow_prob=0.4, train_slow_width=0.3,
    )  # fmt: skip

    def draws(training: bool, config: CommandConfig = cfg) -> np.ndarray:
        rng = np.random.default_rng(3)
        return np.array([sample_goal("goal", config, rng, training=training) for _ in range(6000)])

    trained = draws(True)
    moving = trained[np.any(trained != 0.0, axis=1)]
    # vx below 0.3: 40% from the slow end plus 60% x 30% of the uniform draws, i.e. 58%
    assert 0.55 < np.mean(moving[:, 0] < 0.3) < 0.61
    assert 0.08 < np.mean(np.all(trained == 0.0, axis=1)) < 0.12  # the still share as given
    np.testing.assert_allclose(moving.min(0), [0, -0.2, -0.5], atol=0.01)
    np.testing.assert_allclose(moving.max(0), [1, 0.2, 0.5], atol=0.01)
    # outside training, and in training without a slow share, the draws are the plain ones
    off = cfg.model_copy(update={"train_slow_prob": 0.0})
    plain = draws(False, off)
    np.testing.assert_array_equal(draws(False), plain)
    np.testing.assert_array_equal(draws(True, off), plain)
    assert 0.27 < np.mean(plain[np.any(plain != 0.0, axis=1), 0] < 0.3) < 0.33


def test_same_seed_same_start():
    env = gym.make("flexrl/HumanoidMultiTask-v0")
    first = [env.reset(seed=11) for _ in range(2)]
    np.testing.assert_array_equal(first[0][0], first[1][0])
    assert first[0][1]["task_id"] == first[1][1]["task_id"]
    env.close()


def test_falling_terminates_and_standing_does_not():
    env = gym.make("flexrl/HumanoidWalk-v0")
    env.reset(seed=0)
    _, _, terminated, _, _ = env.step(np.zeros(17))
    assert not terminated  # the initial pose stands (torso ~1.4 m)
    u = env.unwrapped
    qpos = u.init_qpos.copy()
    qpos[2] = 0.3  # torso on the floor
    u.set_state(qpos, np.zeros(u.model.nv))
    _, _, terminated, truncated, info = env.step(np.zeros(17))
    assert terminated and not truncated
    assert info["reward_terms"]["healthy"] == 0.0
    env.close()


def test_an_unactuated_humanoid_falls_and_the_episode_ends():
    env = gym.make("flexrl/HumanoidWalk-v0")
    env.reset(seed=0)
    terminated = False
    for _ in range(200):  # ~3 s; with no torques it is down in well under one
        terminated = env.step(np.zeros(17))[2]
        if terminated:
            break
    assert terminated
    assert env.unwrapped.data.qpos[2] < 1.0
    env.close()


def test_multitask_samples_tasks_with_the_given_weights():
    weights = {"walk_forward": 3.0, "goal": 1.0, "turn_left": 0.0}
    env = gym.make(MULTITASK_ID, task_weights=weights)

    def draw(seed: int, n: int = 400) -> np.ndarray:
        env.reset(seed=seed)
        return np.array([env.reset()[1]["task_id"] for _ in range(n)])

    ids = draw(seed=5)
    share = np.bincount(ids, minlength=len(TASKS)) / len(ids)
    # 400 draws: the standard error of a 0.75 share is ~0.022.
    assert share[task_id("walk_forward")] == pytest.approx(0.75, abs=0.09)
    assert share[task_id("goal")] == pytest.approx(0.25, abs=0.09)
    assert share[task_id("turn_left")] == 0 and share[task_id("turn_right")] == 0
    np.testing.assert_array_equal(ids, draw(seed=5))
    env.close()


def test_reset_option_picks_the_task_of_one_episode():
    env = gym.make(MULTITASK_ID)
    for task in TASKS:
        obs, info = env.reset(seed=0, options={"task": task})
        assert info["task_id"] == task_id(task)
        if task in EXPECTED_GOALS:
            np.testing.assert_allclose(obs[GOAL_SLICE], EXPECTED_GOALS[task])
    with pytest.raises(ValueError, match="unknown task"):
        env.reset(options={"task": "fly"})
    env.close()


def test_env_pickles_with_its_settings():
    env = gym.make("flexrl/HumanoidGoal-v0", command={"resample_steps": 4}, reward={"ctrl": 0.2})
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    assert clone.command_cfg.resample_steps == 4 and clone.reward_cfg.ctrl == 0.2
    assert clone.default_task == "goal"
    env.close()
    clone.close()


def test_make_env_builds_the_recipe_task():
    cfg = EnvConfig(task="turn_right", max_episode_steps=7, reward={"healthy": 2.5})
    env = make_env(cfg)
    assert env.spec.id == TASK_IDS["turn_right"]
    obs, info = env.reset(seed=0)
    np.testing.assert_allclose(obs[GOAL_SLICE], [0.0, 0.0, -0.5])
    for _ in range(7):
        _, _, terminated, truncated, info = env.step(np.zeros(17))
        if terminated:
            break
    assert truncated or terminated
    assert info["reward_terms"]["healthy"] in (0.0, 2.5)
    env.close()

    multi = make_env(EnvConfig(task_weights={"turn_left": 1.0, "goal": 0.0}))
    assert multi.spec.id == MULTITASK_ID
    assert multi.reset(seed=0)[1]["task_id"] == task_id("turn_left")
    multi.close()


def test_make_env_keeps_the_plain_gymnasium_path():
    env = make_env(EnvConfig(id="InvertedPendulum-v5", max_episode_steps=5))
    assert env.observation_space.shape == (4,)
    env.close()


def test_vector_env_gathers_reward_terms_per_env():
    envs = gym.vector.SyncVectorEnv([lambda: make_env(EnvConfig(task="goal")) for _ in range(2)])
    obs, info = envs.reset(seed=0)
    assert obs.shape == (2, 351) and info["goal"].shape == (2, 3)
    _, _, _, _, info = envs.step(np.zeros((2, 17)))
    assert info["reward_terms"]["tracking_lin_vel"].shape == (2,)
    assert info["task_id"].tolist() == [task_id("goal")] * 2
    envs.close()


HUMANOID_RECIPES = sorted((REPO / "recipes").glob("humanoid_*.yaml"))


@pytest.mark.parametrize("path", HUMANOID_RECIPES, ids=lambda p: p.name)
def test_shipped_humanoid_recipes_make_their_env(path):
    config = load_recipe(path, TrainRecipe).env
    env = make_env(config)
    obs, _ = env.reset(seed=0)
    # 348 of Humanoid-v5 + the goal, + the yaw rates tracked and their running means
    assert obs.shape == (357 if config.observe_tracking else 351,)
    env.step(env.action_space.sample())
    env.close()


def test_state_dict_survives_weights_only_load_and_restores_the_episode():
    def make() -> gym.Env:
        return gym.make(MULTITASK_ID, command={"resample_steps": 3})

    env = make()
    env.reset(seed=1, options={"task": "goal"})
    for _ in range(4):
        env.step(np.zeros(17))
    buffer = io.BytesIO()
    torch.save(env.unwrapped.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state == env.unwrapped.state_dict()

    copy = make()
    copy.reset(seed=2, options={"task": "walk_forward"})
    copy.unwrapped.load_state_dict(state)
    copy.unwrapped.np_random.bit_generator.state = env.unwrapped.np_random.bit_generator.state
    for _ in range(6):  # crosses resamples at episode steps 6 and 9
        a, b = env.step(np.zeros(17)), copy.step(np.zeros(17))
        np.testing.assert_array_equal(a[0][GOAL_SLICE], b[0][GOAL_SLICE])
        np.testing.assert_array_equal(a[4]["goal"], b[4]["goal"])
        assert a[4]["task_id"] == b[4]["task_id"] == task_id("goal")
    assert copy.unwrapped.state_dict() == env.unwrapped.state_dict()
    with pytest.raises(ValueError, match="unknown task"):
        copy.unwrapped.load_state_dict({**state, "task": "fly"})
    env.close()
    copy.close()


def test_observe_tracking_appends_what_the_reward_measures_and_its_running_mean():
    """obs[351:357]: the measured [vx, vy, yaw_rate] of the step's info, then their running
    means, which start at the first step's values and move by exp(-dt / tau) per step."""
    from flexrl.envs.humanoid import TRACKING_SLICE, TRACKING_TAU

    env = gym.make(TASK_IDS["turn_left"], observe_tracking=True)
    assert env.observation_space.shape == (357,)
    obs, info = env.reset(seed=4)
    first = np.array([*info["lin_vel"], info["yaw_rate"]])
    np.testing.assert_allclose(obs[TRACKING_SLICE], np.concatenate([first, first]), atol=1e-12)
    keep = np.exp(-env.unwrapped.dt / TRACKING_TAU)
    mean = None
    for _ in range(5):
        obs, _, terminated, _, info = env.step(np.zeros(17))
        now = np.array([*info["lin_vel"], info["yaw_rate"]])
        mean = now if mean is None else keep * mean + (1 - keep) * now
        np.testing.assert_allclose(obs[TRACKING_SLICE], np.concatenate([now, mean]), atol=1e-12)
        assert not terminated
    np.testing.assert_array_equal(obs[GOAL_SLICE], env.unwrapped.goal)  # the goal stays put
    assert gym.make(TASK_IDS["turn_left"]).observation_space.shape == (351,)
    env.close()


def test_running_mean_terms_read_the_means_before_the_step():
    reward = {"yaw_rate_wobble": 2.0, "tracking_lin_vel_mean": 1.5, "lin_vel_mean_sigma": 0.05}
    env = gym.make(TASK_IDS["turn_left"], observe_tracking=True, reward=reward)
    env.reset(seed=5)
    rng = np.random.default_rng(5)
    _, _, _, _, info = env.step(rng.uniform(-0.4, 0.4, 17))
    assert info["reward_terms"]["yaw_rate_wobble"] == 0.0  # the mean starts at the first step
    for _ in range(5):
        mean = env.unwrapped.tracked.copy()
        goal = env.unwrapped.goal
        _, _, terminated, _, info = env.step(rng.uniform(-0.4, 0.4, 17))
        expected = -2.0 * min((info["yaw_rate"] - mean[2]) ** 2, 1.0)
        assert info["reward_terms"]["yaw_rate_wobble"] == pytest.approx(expected, abs=1e-12)
        speed = 1.5 * np.exp(-np.sum((goal[:2] - mean[:2]) ** 2) / 0.05)
        assert info["reward_terms"]["tracking_lin_vel_mean"] == pytest.approx(speed, abs=1e-12)
        assert not terminated
    env.close()
