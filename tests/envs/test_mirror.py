"""The left-right mirror of the Humanoid skills: checked against the simulator itself."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from flexrl.envs.humanoid import HumanoidSkillEnv
from flexrl.envs.mirror import action_mirror, mirror, mirror_state, observation_mirror
from flexrl.envs.observation import CFRC_EXT
from flexrl.rl.normalization import ObsNormalizer
from flexrl.rl.symmetry import MirrorLoss

OBS_DIM = 357  # with observe_tracking: every part of the observation


def skill_env(frame: str) -> HumanoidSkillEnv:
    return HumanoidSkillEnv(task="goal", observation_frame=frame, observe_tracking=True)


def observe(env: HumanoidSkillEnv, qpos, qvel, ctrl, goal) -> np.ndarray:
    env.model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_WARMSTART  # both solve from 0
    env.data.ctrl[:] = ctrl  # the actuator forces observed
    env.set_state(qpos, qvel)
    mujoco.mj_rnePostConstraint(env.model, env.data)  # contact forces for cfrc_ext
    env.goal, env.tracked = np.asarray(goal, float), None
    return env._get_obs()


def test_a_mirror_is_its_own_inverse():
    for perm, sign in (observation_mirror(OBS_DIM), observation_mirror(351), action_mirror()):
        x = np.random.default_rng(0).normal(size=len(perm))
        np.testing.assert_array_equal(mirror(mirror(x, (perm, sign)), (perm, sign)), x)
        assert sorted(perm) == list(range(len(perm)))
        assert not np.array_equal(perm, np.arange(len(perm)))  # left and right do swap
    with pytest.raises(ValueError, match="348"):
        observation_mirror(348)


@pytest.mark.parametrize("frame", ["world", "heading"])
def test_the_mirrored_state_observes_the_mirrored_observation(frame):
    env = skill_env(frame)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(40):  # mid-stride, feet on the ground
        env.step(rng.uniform(-0.4, 0.4, env.model.nu))
    qpos, qvel, ctrl = env.data.qpos.copy(), env.data.qvel.copy(), env.data.ctrl.copy()
    seen = observe(env, qpos, qvel, ctrl, [0.6, 0.15, 0.4])
    twin_ctrl = mirror(ctrl, action_mirror())
    twin = observe(skill_env(frame), *mirror_state(qpos, qvel), twin_ctrl, [0.6, -0.15, -0.4])
    expected = mirror(seen, observation_mirror(OBS_DIM))
    assert np.abs(env.data.cfrc_ext[1:]).max() > 1
    kinematic = np.ones(OBS_DIM, bool)
    kinematic[CFRC_EXT] = False
    np.testing.assert_allclose(twin[kinematic], expected[kinematic], rtol=0, atol=1e-9)
    # Contact forces: the solver visits the contacts in order, so they mirror only roughly.
    scale = np.abs(seen[CFRC_EXT]).max()
    np.testing.assert_allclose(twin[CFRC_EXT], expected[CFRC_EXT], rtol=0, atol=0.02 * scale)
    # Not a map that fits anything: the unmirrored observation differs.
    assert np.abs(twin[kinematic] - seen[kinematic]).max() > 0.1


def test_mirrored_actions_move_the_mirrored_body_the_mirrored_way():
    """In the air and inside every joint's range (no constraint for the solver to order), with
    the model's two asymmetries evened out, mirrored actions give mirrored observations and the
    same reward step after step."""
    envs = [skill_env("heading"), skill_env("heading")]
    hinge_pairs = observation_mirror(351)[0][5:22] - 5  # joint angles: the hinges' partners
    for env in envs:
        stiffness, armature = env.model.jnt_stiffness[1:], env.model.dof_armature[6:]
        stiffness[:] = np.maximum(stiffness, stiffness[hinge_pairs])
        armature[:] = np.maximum(armature, armature[hinge_pairs])
        env.reset(seed=3)
    env, twin = envs
    qpos, qvel = env.data.qpos.copy(), env.data.qvel.copy() * 3
    qpos[2] += 1.0  # off the ground
    rng = np.random.default_rng(1)
    qpos[7:] = env.model.jnt_range[1:].mean(axis=1) + rng.uniform(-0.05, 0.05, 17)
    env.set_state(qpos, qvel)
    twin.set_state(*mirror_state(qpos, qvel))
    twin.goal = env.goal * [1, -1, -1]
    for _ in range(10):
        action = rng.uniform(-0.4, 0.4, 17)
        obs, reward, *_ = env.step(action)
        twin_obs, twin_reward, *_ = twin.step(mirror(action, action_mirror()))
        assert env.data.nefc == 0  # nothing for the solver: the physics is exactly symmetric
        np.testing.assert_allclose(twin_obs, mirror(obs, observation_mirror(OBS_DIM)), atol=1e-9)
        assert twin_reward == pytest.approx(reward, abs=1e-9)
    assert abs(obs[349]) > 1e-3  # the goal's vy: mirroring it is a real change


def test_the_loss_mirrors_normalised_observations_as_the_normaliser_would():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(64, OBS_DIM)) * rng.uniform(0.1, 3, OBS_DIM) + rng.normal(size=OBS_DIM)
    normalizer = ObsNormalizer((OBS_DIM,), clip=10.0)
    normalizer(raw, update=True)
    loss = MirrorLoss(OBS_DIM, np.full(17, 0.4), torch.device("cpu"))
    loss.refresh(normalizer)
    x = torch.from_numpy(normalizer(raw))
    expected = normalizer(mirror(raw, observation_mirror(OBS_DIM)))
    np.testing.assert_allclose(loss.mirror_observations(x).numpy(), expected, atol=1e-5)

    # A policy that acts the same whatever it sees is symmetric only if its action is.
    actor = torch.nn.Linear(OBS_DIM, 17)
    torch.nn.init.zeros_(actor.weight)
    torch.nn.init.zeros_(actor.bias)
    assert loss(actor, x).item() == 0
    with torch.no_grad():
        actor.bias[1] = 0.2  # abdomen_z: the mirror flips its sign
    assert loss(actor, x).item() == pytest.approx(0.4**2 / 17, rel=1e-5)
    with torch.no_grad():
        actor.bias[1] = 0.0
        actor.bias[3], actor.bias[7] = 3.0, 1.0  # right and left hip_x: both clip to 0.4
    assert loss(actor, x).item() == 0  # the same actions: clipping erases the difference
    with torch.no_grad():
        actor.bias[7] = 0.1
    # Right must come down to 0.1 (from 3.0), left up to anything that clips to 0.4 (from 0.1).
    assert loss(actor, x).item() == pytest.approx((2.9**2 + 0.3**2) / 17, rel=1e-5)


def test_a_mirrored_policy_acts_as_the_mirror_of_its_source():
    """mirror_policy is a change of variables: in every state the new network does what the
    source does in the mirrored state, mirrored; its tasks swap; twice gives the source back."""
    from flexrl import zoo
    from flexrl.rl.checkpoint import checkpoint_policy, load_checkpoint, load_policy
    from flexrl.rl.symmetry import mirror_policy

    source_path = zoo.zoo_path("zoo:turn_left")
    state = load_checkpoint(source_path)
    env_recipe = state["recipe"]["env"]
    env_recipe["task_weights"] = {"turn_left": 2.0, "walk_forward": 1.0}
    env_recipe["command"] |= {"vy_range": [-0.1, 0.3], "yaw_rate_range": [0.0, 0.5]}
    mirrored = mirror_policy(state)
    mirrored_env = mirrored["recipe"]["env"]
    assert mirrored_env["task"] == "turn_right"
    assert mirrored_env["task_weights"] == {"turn_right": 2.0, "walk_forward": 1.0}
    assert mirrored_env["command"]["vy_range"] == [-0.3, 0.1]
    assert mirrored_env["command"]["yaw_rate_range"] == [-0.5, 0.0]

    env = skill_env("heading")
    env.reset(seed=3)
    rows = []
    for _ in range(40):  # states with contacts and joint limits in play
        obs, *_ = env.step(env.action_space.sample())
        rows.append(obs)
    obs = np.stack(rows)
    source = load_policy(source_path)
    dest = checkpoint_policy(mirrored)
    obs_map, act_map = observation_mirror(obs.shape[1]), action_mirror()
    np.testing.assert_allclose(
        dest.act(obs), mirror(source.act(mirror(obs, obs_map)), act_map), atol=1e-5
    )
    back = mirror_policy(mirrored)
    for key, weights in state["agent"].items():
        torch.testing.assert_close(back["agent"][key], weights, rtol=0, atol=0)
    torch.testing.assert_close(back["obs_rms"]["mean"], state["obs_rms"]["mean"], rtol=0, atol=0)
    assert back["recipe"] == state["recipe"]
