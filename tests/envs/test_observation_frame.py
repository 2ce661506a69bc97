"""The heading-frame observation is the same whichever way the Humanoid faces."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from flexrl.config import EnvConfig
from flexrl.envs import make_env
from flexrl.envs.observation import CFRC_EXT, QUAT, heading_frame


def rotated_about_vertical(qpos: np.ndarray, qvel: np.ndarray, angle: float):
    """The same state turned by `angle` about the world's vertical axis through the origin."""
    c, s = np.cos(angle), np.sin(angle)
    qpos, qvel = qpos.copy(), qvel.copy()
    qpos[:2] = [c * qpos[0] - s * qpos[1], s * qpos[0] + c * qpos[1]]
    w, x, y, z = qpos[3:7]
    hc, hs = np.cos(angle / 2), np.sin(angle / 2)  # (hc, 0, 0, hs) * q
    qpos[3:7] = [hc * w - hs * z, hc * x - hs * y, hc * y + hs * x, hc * z + hs * w]
    qvel[:2] = [c * qvel[0] - s * qvel[1], s * qvel[0] + c * qvel[1]]  # world linear velocity
    return qpos, qvel  # qvel[3:6] is in the torso's frame: it does not turn


def observe(env, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    # The contact solver starts from the last step's accelerations; without that warm start
    # both states solve from the same (rotated) point, so their contact forces agree.
    env.model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_WARMSTART
    env.set_state(qpos, qvel)
    mujoco.mj_rnePostConstraint(env.model, env.data)  # contact forces for cfrc_ext
    return env._get_obs()


@pytest.fixture(scope="module")
def mid_stride():
    """A state with motion and ground contact: 40 steps of random actions from a reset."""
    env = make_env(EnvConfig(observation_frame="heading")).unwrapped
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(40):
        env.step(rng.uniform(-0.4, 0.4, env.model.nu))
    return env, env.data.qpos.copy(), env.data.qvel.copy()


@pytest.mark.parametrize("angle", [0.3, np.pi / 2, -2.5, np.pi, -np.pi / 2])
def test_heading_frame_observation_does_not_depend_on_the_heading(mid_stride, angle):
    env, qpos, qvel = mid_stride
    before = observe(env, qpos, qvel)
    after = observe(env, *rotated_about_vertical(qpos, qvel, angle))
    assert np.abs(env.data.cfrc_ext[1:]).max() > 1  # the feet are on the ground
    kinematic = np.ones(len(before), bool)
    kinematic[CFRC_EXT] = False
    np.testing.assert_allclose(after[kinematic], before[kinematic], rtol=0, atol=1e-8)
    # Contact forces too, where the physics itself is symmetric: MuJoCo's pyramidal friction
    # cone has its edges along the world's axes, so only quarter turns leave it unchanged.
    if np.isclose(np.sin(2 * angle), 0):
        np.testing.assert_allclose(after[CFRC_EXT], before[CFRC_EXT], rtol=0, atol=1e-2)

    env.observation_frame = "world"  # the raw observation does change: the test can fail
    try:
        raw_before = observe(env, qpos, qvel)
        raw_after = observe(env, *rotated_about_vertical(qpos, qvel, angle))
    finally:
        env.observation_frame = "heading"
    assert np.abs(raw_after - raw_before).max() > 0.1


def test_heading_frame_keeps_what_does_not_depend_on_the_heading(mid_stride):
    env, qpos, qvel = mid_stride
    env.observation_frame = "world"
    try:
        raw = observe(env, qpos, qvel)[:348]
    finally:
        env.observation_frame = "heading"
    seen = heading_frame(raw[None])[0]
    np.testing.assert_array_equal(seen[5:22], raw[5:22])  # joint angles
    np.testing.assert_array_equal(seen[25:45], raw[25:45])  # torso-frame angular velocity, joints
    np.testing.assert_array_equal(seen[253:270], raw[253:270])  # actuator forces
    np.testing.assert_allclose(np.linalg.norm(seen[QUAT]), 1.0, atol=1e-12)
    # Seen from the heading frame, a body already facing along x is left as it is (every part
    # keeps its layout).
    np.testing.assert_allclose(heading_frame(seen[None])[0], seen, rtol=0, atol=1e-12)
    # The quaternion without its heading points the torso's x axis along the world's x.
    w, x, y, z = seen[QUAT]
    assert abs(2 * (w * z + x * y)) < 1e-12
