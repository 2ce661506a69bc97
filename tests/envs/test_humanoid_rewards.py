"""Reward terms on hand-built Humanoid states (real MuJoCo: set qpos/qvel, then mj_forward)."""

from __future__ import annotations

import math

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import flexrl.envs  # noqa: F401  (registers the ids)
from flexrl.config import RewardConfig
from flexrl.envs.humanoid import HumanoidSkillEnv
from flexrl.envs.rewards import TERM_NAMES, body_yaw_rate, heading_yaw, shaped_reward

SIGMA = RewardConfig().lin_vel_sigma


def axis_angle_quat(axis: tuple[float, float, float], angle: float) -> np.ndarray:
    quat = np.zeros(4)
    unit = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)  # MuJoCo expects a unit axis
    mujoco.mju_axisAngle2Quat(quat, unit, angle)
    return quat


def rotation(quat: np.ndarray) -> np.ndarray:
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, quat)
    return mat.reshape(3, 3)


# Torso orientations: upright ones, and ones whose body z axis is not world z, so a reward that
# read qvel[5] as the world yaw rate would get the sign or the size wrong.
ORIENTATIONS = {
    "upright": axis_angle_quat((0, 0, 1), 0.0),
    "yawed_90": axis_angle_quat((0, 0, 1), math.pi / 2),
    "pitched_90": axis_angle_quat((0, 1, 0), math.pi / 2),
    "rolled_90": axis_angle_quat((1, 0, 0), -math.pi / 2),
    "leaning": axis_angle_quat((1, 2, 0.5), 0.7),
}


@pytest.fixture
def env() -> HumanoidSkillEnv:
    env = gym.make("flexrl/HumanoidWalk-v0")
    env.reset(seed=0)
    yield env.unwrapped
    env.close()


def hand_build(
    env: HumanoidSkillEnv,
    quat: np.ndarray | None = None,
    lin_vel: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ang_vel_body: np.ndarray | None = None,
    height: float = 1.4,
) -> None:
    """Default pose at `height` with the given free-joint state; every other joint still."""
    qpos = env.init_qpos.copy()
    qvel = np.zeros(env.model.nv)
    qpos[2] = height
    if quat is not None:
        qpos[3:7] = quat
    qvel[0:3] = lin_vel
    if ang_vel_body is not None:
        qvel[3:6] = ang_vel_body
    env.data.ctrl[:] = 0.0
    env.set_state(qpos, qvel)  # runs mj_forward
    mujoco.mj_rnePostConstraint(env.model, env.data)  # cfrc_ext, as a real step computes it


def test_standing_still_scores_almost_no_tracking_reward_for_a_1mps_target(env):
    env.goal = np.array([1.0, 0.0, 0.0])
    hand_build(env)
    _, terms, measured = env.evaluate()
    weight = env.reward_cfg.tracking_lin_vel
    np.testing.assert_allclose(measured["lin_vel"], [0.0, 0.0], atol=1e-12)
    assert terms["tracking_lin_vel"] == pytest.approx(weight * math.exp(-1.0 / SIGMA))
    assert terms["tracking_lin_vel"] < 0.05 * weight  # exp(-4): near zero, far below the max


@pytest.mark.parametrize("name", ["upright", "yawed_90"])
def test_moving_at_the_target_speed_in_the_heading_frame_scores_the_max(env, name):
    quat = ORIENTATIONS[name]
    forward = rotation(quat)[:, 0]  # body x axis in the world: where the torso faces
    env.goal = np.array([1.0, 0.0, 0.0])
    hand_build(env, quat=quat, lin_vel=tuple(forward))
    _, terms, measured = env.evaluate()
    np.testing.assert_allclose(measured["lin_vel"], [1.0, 0.0], atol=1e-9)
    assert terms["tracking_lin_vel"] == pytest.approx(env.reward_cfg.tracking_lin_vel)


def test_world_velocity_is_not_heading_velocity_when_the_torso_is_yawed(env):
    # Facing +y and moving along world +x is moving to the RIGHT in the heading frame.
    env.goal = np.array([1.0, 0.0, 0.0])
    hand_build(env, quat=ORIENTATIONS["yawed_90"], lin_vel=(1.0, 0.0, 0.0))
    _, terms, measured = env.evaluate()
    np.testing.assert_allclose(measured["lin_vel"], [0.0, -1.0], atol=1e-9)
    assert terms["tracking_lin_vel"] == pytest.approx(
        env.reward_cfg.tracking_lin_vel * math.exp(-2.0 / SIGMA)
    )


@pytest.mark.parametrize("name", list(ORIENTATIONS))
@pytest.mark.parametrize("rate", [0.5, -0.5])
def test_a_body_spinning_rigidly_has_its_world_yaw_rate(env, name, rate):
    quat = ORIENTATIONS[name]
    # The body-frame angular velocity of a body spinning about WORLD z at `rate`.
    ang_vel_body = rotation(quat).T @ np.array([0.0, 0.0, rate])
    hand_build(env, quat=quat, ang_vel_body=ang_vel_body)
    _, _, measured = env.evaluate()
    assert measured["yaw_rate"] == pytest.approx(rate)  # + is a left turn
    # MuJoCo's own world-oriented angular velocity of the torso agrees.
    torso = env.model.body("torso").id
    assert env.data.cvel[torso][2] == pytest.approx(rate)


def test_body_yaw_rate_of_two_point_masses_by_hand():
    # Two 1 kg points at (+-1, 0) from the centre of mass, each moving at 0.5 m/s along +-y:
    # angular momentum 2 * 1 * 1 * 0.5 = 1, moment of inertia 2 * 1 * 1^2 = 2, so 0.5 rad/s.
    rate = body_yaw_rate(
        angmom_z=np.array([1.0]),
        com_xy=np.array([[3.0, -2.0]]),
        body_xy=np.array([[[4.0, -2.0], [2.0, -2.0]]]),
        body_rot_z=np.zeros((1, 2, 3)),
        mass=np.array([1.0, 1.0]),
        inertia=np.zeros((2, 3)),
    )
    assert rate[0] == pytest.approx(0.5)


def test_a_torso_twisting_against_its_limbs_is_not_a_turn(env):
    # The torso spins left while the arms swing so that the whole body's angular momentum about
    # the vertical is zero, as in a stride: the torso's own yaw rate is 0.5, the body's is 0.
    def momentum_z(qvel: np.ndarray) -> float:
        env.set_state(env.data.qpos.copy(), qvel)
        mujoco.mj_subtreeVel(env.model, env.data)
        return float(env.data.subtree_angmom[1][2])

    hand_build(env)
    spin = np.zeros(env.model.nv)
    spin[5] = 0.5  # upright: the free joint's body-z angular velocity is the world yaw rate
    swing = np.zeros(env.model.nv)
    for joint in ("right_shoulder1", "left_shoulder1", "right_shoulder2", "left_shoulder2"):
        swing[env.model.jnt_dofadr[env.model.joint(joint).id]] = 1.0
    qvel = spin - momentum_z(spin) / momentum_z(swing) * swing
    env.set_state(env.data.qpos.copy(), qvel)
    _, _, measured = env.evaluate()
    assert env.data.cvel[env.model.body("torso").id][2] == pytest.approx(0.5)
    assert measured["yaw_rate"] == pytest.approx(0.0, abs=1e-9)


def test_body_yaw_rate_matches_a_loop_over_full_inertia_matrices(env):
    rng = np.random.default_rng(3)
    hand_build(env, quat=ORIENTATIONS["leaning"])
    env.set_state(env.data.qpos.copy(), rng.normal(size=env.model.nv))
    _, _, measured = env.evaluate()
    m, d = env.model, env.data
    mujoco.mj_subtreeVel(m, d)
    com = d.subtree_com[1]
    inertia_z = 0.0
    for b in range(1, m.nbody):
        rot = d.ximat[b].reshape(3, 3)
        offset = d.xipos[b] - com
        inertia_z += (rot @ np.diag(m.body_inertia[b]) @ rot.T)[2, 2]
        inertia_z += m.body_mass[b] * (offset[0] ** 2 + offset[1] ** 2)
    assert measured["yaw_rate"] == pytest.approx(d.subtree_angmom[1][2] / inertia_z)


@pytest.mark.parametrize("task", ["turn_left", "turn_right"])
def test_turn_tasks_pay_the_max_for_their_own_direction_only(task):
    env = gym.make(
        {"turn_left": "flexrl/HumanoidTurnLeft-v0", "turn_right": "flexrl/HumanoidTurnRight-v0"}[
            task
        ]
    )
    env.reset(seed=0)
    u = env.unwrapped
    rate = u.command_cfg.turn_rate
    sign = 1.0 if task == "turn_left" else -1.0
    quat = ORIENTATIONS["leaning"]
    scores = {}
    for direction in (1.0, -1.0):
        hand_build(u, quat=quat, ang_vel_body=rotation(quat).T @ [0.0, 0.0, direction * rate])
        scores[direction] = u.evaluate()[1]["tracking_yaw_rate"]
    assert scores[sign] == pytest.approx(u.reward_cfg.tracking_yaw_rate)
    assert scores[-sign] < 0.1 * scores[sign]  # error 2*rate: exp(-4 rate^2 / sigma)
    env.close()


def test_terms_sum_to_the_reward_and_costs_are_negative(env):
    env.goal = np.array([0.5, 0.2, 0.3])
    hand_build(env, lin_vel=(0.3, 0.1, 0.0), ang_vel_body=np.array([0.1, 0.2, 0.3]))
    env.data.ctrl[:] = 0.3
    total, terms, _ = env.evaluate()
    assert set(terms) == set(TERM_NAMES)
    assert total == pytest.approx(sum(terms.values()))
    assert terms["ctrl"] == pytest.approx(-env.reward_cfg.ctrl * 17 * 0.09)
    assert terms["healthy"] == env.reward_cfg.healthy


def test_yaw_rate_wobble_by_hand():
    """The yaw rate against its running mean, squared and capped at 1, whatever the command."""
    n = 3
    _, terms = shaped_reward(
        lin_vel=np.zeros((n, 2)),
        yaw_rate=np.array([0.8, 0.2, 3.0]),
        command=np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 0.2], [0.0, 0.0, 3.0]]),
        healthy=np.ones(n, bool),
        ctrl=np.zeros((n, 17)),
        contact_forces=np.zeros((n, 14, 6)),
        params=RewardConfig(yaw_rate_wobble=2.0),
        tracked_mean=np.array([[0.0, 0.0, 0.5]] * 3),
    )
    np.testing.assert_allclose(terms["yaw_rate_wobble"], [-2 * 0.09, -2 * 0.09, -2.0])
    _, without_mean = shaped_reward(
        lin_vel=np.zeros((1, 2)), yaw_rate=np.array([0.8]), command=np.zeros((1, 3)),
        healthy=np.ones(1, bool), ctrl=np.zeros((1, 17)), contact_forces=np.zeros((1, 14, 6)),
        params=RewardConfig(yaw_rate_wobble=2.0),
    )  # fmt: skip
    assert "yaw_rate_wobble" not in without_mean  # a plain env's datasets keep their columns
    assert "tracking_yaw_rate_mean" not in without_mean
    assert "tracking_lin_vel_mean" not in without_mean


def test_tracking_yaw_rate_mean_by_hand():
    """The running mean of the yaw rate, not the step's, against the command's yaw rate."""
    _, terms = shaped_reward(
        lin_vel=np.zeros((3, 2)),
        yaw_rate=np.array([0.9, -0.3, 0.5]),  # the stride's twist: not what this term sees
        command=np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5], [0.3, 0.0, -0.5]]),
        healthy=np.ones(3, bool),
        ctrl=np.zeros((3, 17)),
        contact_forces=np.zeros((3, 14, 6)),
        params=RewardConfig(tracking_yaw_rate_mean=1.5, yaw_rate_mean_sigma=0.02),
        tracked_mean=np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 0.4], [0.3, 0.0, -0.3]]),
    )
    np.testing.assert_allclose(
        terms["tracking_yaw_rate_mean"], [1.5, 1.5 * np.exp(-0.01 / 0.02), 1.5 * np.exp(-2.0)]
    )


def test_tracking_lin_vel_mean_by_hand():
    """The running mean of [vx, vy], not the step's surge, against the commanded velocity."""
    _, terms = shaped_reward(
        lin_vel=np.array([[1.4, 0.0], [0.2, 0.0], [0.0, 0.0]]),  # mid-stride: not what it sees
        yaw_rate=np.zeros(3),
        command=np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.5], [0.5, -0.2, 0.0]]),
        healthy=np.ones(3, bool),
        ctrl=np.zeros((3, 17)),
        contact_forces=np.zeros((3, 14, 6)),
        params=RewardConfig(tracking_lin_vel_mean=2.0, lin_vel_mean_sigma=0.05),
        tracked_mean=np.array([[1.0, 0.0, 0.3], [0.8, 0.1, 0.5], [0.3, 0.0, 0.0]]),
    )
    np.testing.assert_allclose(
        terms["tracking_lin_vel_mean"],
        [2.0, 2.0 * np.exp(-0.05 / 0.05), 2.0 * np.exp(-0.08 / 0.05)],
    )


@pytest.mark.parametrize(
    ("axis", "angle"),
    [((0, 0, 1), 1.0), ((0, 1, 0), 0.9), ((1, 0, 0), -0.4), ((1, 2, 0.5), 0.7), ((0, 1, 0), 2.5)],
)
def test_upright_costs_the_squared_sine_of_the_torso_tilt(env, axis, angle):
    """A torso rotated by `angle` about `axis` leans acos(z of its rotated z axis) from vertical
    (a yaw alone: none); the cost is sin^2 of that lean, from MuJoCo's own rotation matrix."""
    env.reward_cfg = RewardConfig(upright=1.5)
    quat = axis_angle_quat(axis, angle)
    hand_build(env, quat=quat)
    lean = math.acos(rotation(quat)[2, 2])
    assert env.evaluate()[1]["upright"] == pytest.approx(-1.5 * math.sin(lean) ** 2, abs=1e-12)
    env.reward_cfg = RewardConfig()
    assert "upright" not in env.evaluate()[1]  # off: a plain env's datasets keep their columns


def test_fallen_body_gets_no_healthy_reward(env):
    hand_build(env, height=0.4)
    assert env.evaluate()[1]["healthy"] == 0.0


def test_contact_cost_comes_from_cfrc_ext_and_is_clipped():
    params = RewardConfig(contact=1.0, contact_max=10.0)
    args = dict(
        lin_vel=np.zeros((2, 2)),
        yaw_rate=np.zeros(2),
        command=np.zeros((2, 3)),
        healthy=np.ones(2, bool),
        ctrl=np.zeros((2, 17)),
        params=params,
    )
    forces = np.zeros((2, 14, 6))
    forces[0, 3, 2] = 2.0  # cost 4
    forces[1, 3, 2] = 100.0  # cost 1e4, clipped to 10
    _, terms = shaped_reward(contact_forces=forces, **args)
    np.testing.assert_allclose(terms["contact"], [-4.0, -10.0])


def test_batched_reward_equals_row_by_row():
    rng = np.random.default_rng(0)
    n = 64
    inputs = dict(
        lin_vel=rng.normal(size=(n, 2)),
        yaw_rate=rng.normal(size=n),
        command=rng.normal(size=(n, 3)),
        healthy=rng.random(n) > 0.3,
        ctrl=rng.uniform(-0.4, 0.4, size=(n, 17)),
        contact_forces=rng.normal(size=(n, 14, 6)) * 100,
    )
    params = RewardConfig()
    total, terms = shaped_reward(params=params, **inputs)
    assert total.shape == (n,) and all(t.shape == (n,) for t in terms.values())
    for i in (0, 17, n - 1):
        row = {k: v[i : i + 1] for k, v in inputs.items()}
        row_total, row_terms = shaped_reward(params=params, **row)
        assert row_total[0] == pytest.approx(total[i])
        for name in TERM_NAMES:
            assert row_terms[name][0] == pytest.approx(terms[name][i])


def test_heading_yaw_of_a_yawed_torso():
    quat = np.stack([axis_angle_quat((0, 0, 1), a) for a in (0.0, 0.5, -2.0)])
    np.testing.assert_allclose(heading_yaw(quat), [0.0, 0.5, -2.0], atol=1e-12)
