"""The Humanoid's left-right mirror: the observation and action of the mirror-image body.

The Humanoid is built symmetric about its sagittal (x-z) plane, and so is every skill: walking
forward mirrors to walking forward, turning left at +r to turning right at -r, a goal
[vx, vy, yaw_rate] to [vx, -vy, -yaw_rate]. A policy should then act in the mirrored state as
the mirror of what it does in the state itself. PPO alone does not make it so (policies turn one
way better than the other); `ppo.mirror_coef` adds that as a loss (flexrl.rl.ppo).

Both mirrors are a permutation with signs, `mirrored = x[..., perm] * sign`, derived from the
MuJoCo model rather than written out: left and right bodies, joints and actuators swap by name;
a hinge keeps its angle's sign when the mirror of its axis is its partner's axis and flips it
when it is minus that (the abdomen's z and x hinges, the shoulders). Reflecting y in the
(heading or world) frame turns a vector (x, y, z) into (x, -y, z) and an axial one (angular
velocity, torque) into (-x, y, -z); a quaternion (w, x, y, z) into (w, -x, y, -z); an inertia
tensor's xy and yz entries change sign. The model is symmetric up to two details the mirror
ignores: the left knee's joint stiffness of 1 (the right's is 0) and the hip_y armature (0.008
right, 0.01 left); and MuJoCo's PGS solver visits constraints (contacts, joint limits) in
order, so their forces mirror only approximately. Without those, a mirrored state and mirrored
actions give the mirrored observations and the same reward, to rounding (tests/envs/test_mirror.py).
"""

from __future__ import annotations

from functools import cache

import mujoco
import numpy as np
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv

VECTOR = np.array([1.0, -1.0, 1.0])
AXIAL = np.array([-1.0, 1.0, -1.0])
QUATERNION = np.array([1.0, -1.0, 1.0, -1.0])
INERTIA = np.array([1.0, 1.0, 1.0, -1.0, 1.0, -1.0])  # xx, yy, zz, xy, xz, yz
GOAL = np.array([1.0, -1.0, -1.0])  # [vx, vy, yaw_rate]: leftward and turning flip


def _partner(name: str) -> str:
    for a, b in (("right_", "left_"), ("left_", "right_")):
        if name.startswith(a):
            return b + name[len(a) :]
    return name


@cache
def _model_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(hinge perm, hinge sign) over the 17 hinges in qpos order, (actuator perm, actuator
    sign) over the 17 actuators, body perm over the 13 bodies after the world."""
    env = HumanoidEnv()
    model = env.model
    env.close()

    def ids(kind: mujoco.mjtObj, count: int, first: int) -> tuple[list[str], dict[str, int]]:
        names = [mujoco.mj_id2name(model, kind, i) for i in range(first, count)]
        return names, {n: i for i, n in enumerate(names)}

    joints, joint_index = ids(mujoco.mjtObj.mjOBJ_JOINT, model.njnt, 1)  # after the free joint
    hinge_perm = np.array([joint_index[_partner(n)] for n in joints])
    axes = model.jnt_axis[1:]
    alignment = np.einsum("ij,ij->i", axes * AXIAL, axes[hinge_perm]) / np.einsum(
        "ij,ij->i", axes, axes
    )
    if not np.allclose(np.abs(alignment), 1.0):
        raise ValueError("the Humanoid model is not left-right symmetric: a hinge has no mirror")
    hinge_sign = np.sign(alignment)

    actuators, actuator_index = ids(mujoco.mjtObj.mjOBJ_ACTUATOR, model.nu, 0)
    actuator_perm = np.array([actuator_index[_partner(n)] for n in actuators])
    actuator_joint = model.actuator_trnid[:, 0] - 1  # index among the hinges
    actuator_sign = hinge_sign[actuator_joint]

    bodies, body_index = ids(mujoco.mjtObj.mjOBJ_BODY, model.nbody, 1)  # after the world
    body_perm = np.array([body_index[_partner(n)] for n in bodies])
    return hinge_perm, hinge_sign, actuator_perm, actuator_sign, body_perm


class _Map:
    """Collects (perm, sign) segment by segment: each segment's indices are relative to it."""

    def __init__(self) -> None:
        self.perm: list[np.ndarray] = []
        self.sign: list[np.ndarray] = []
        self.size = 0

    def add(self, perm: np.ndarray, sign: np.ndarray) -> None:
        self.perm.append(np.asarray(perm) + self.size)
        self.sign.append(np.asarray(sign, dtype=np.float64))
        self.size += len(perm)

    def per_body(self, body_perm: np.ndarray, row_sign: np.ndarray) -> None:
        width = len(row_sign)
        perm = (body_perm[:, None] * width + np.arange(width)).ravel()
        self.add(perm, np.tile(row_sign, len(body_perm)))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.perm), np.concatenate(self.sign)


@cache
def observation_mirror(obs_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(perm, sign) of the skill env's observation (351 values, or 357 with observe_tracking;
    layout in flexrl.envs.observation and flexrl.envs.humanoid), in either observation frame."""
    from flexrl.envs.humanoid import BASE_OBS_DIM, GOAL_SLICE, TRACKING_DIM

    if obs_dim not in (GOAL_SLICE.stop, GOAL_SLICE.stop + TRACKING_DIM):
        raise ValueError(
            f"the mirror knows the Humanoid skill observation ({GOAL_SLICE.stop} or "
            f"{GOAL_SLICE.stop + TRACKING_DIM} values), not {obs_dim}"
        )
    hinge_perm, hinge_sign, _, _, body_perm = _model_maps()
    m = _Map()
    m.add([0], [1.0])  # torso height
    m.add(np.arange(4), QUATERNION)
    m.add(hinge_perm, hinge_sign)  # joint angles
    m.add(np.arange(3), VECTOR)  # torso linear velocity
    m.add(np.arange(3), AXIAL)  # torso angular velocity (torso frame)
    m.add(hinge_perm, hinge_sign)  # joint speeds
    m.per_body(body_perm, np.concatenate([INERTIA, VECTOR, [1.0]]))  # cinert
    m.per_body(body_perm, np.concatenate([AXIAL, VECTOR]))  # cvel
    m.add(hinge_perm, hinge_sign)  # actuator forces on the hinges
    m.per_body(body_perm, np.concatenate([AXIAL, VECTOR]))  # cfrc_ext
    assert m.size == BASE_OBS_DIM
    m.add(np.arange(3), GOAL)
    if obs_dim > GOAL_SLICE.stop:  # measured [vx, vy, yaw_rate], then their running means
        m.add(np.arange(3), GOAL)
        m.add(np.arange(3), GOAL)
    return m.arrays()


@cache
def action_mirror() -> tuple[np.ndarray, np.ndarray]:
    """(perm, sign) of the Humanoid's 17 actuator controls."""
    _, _, actuator_perm, actuator_sign, _ = _model_maps()
    return actuator_perm, actuator_sign


def mirror_state(qpos: np.ndarray, qvel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Humanoid's simulator state reflected in the world's x-z plane: (qpos [24], qvel [23])
    of the mirror-image body, moving as the mirror image moves."""
    hinge_perm, hinge_sign, _, _, _ = _model_maps()
    qpos, qvel = qpos.copy(), qvel.copy()
    qpos[:3] *= VECTOR
    qpos[3:7] *= QUATERNION
    qpos[7:] = qpos[7:][hinge_perm] * hinge_sign
    qvel[:3] *= VECTOR  # world frame
    qvel[3:6] *= AXIAL  # the torso's frame, itself mirrored
    qvel[6:] = qvel[6:][hinge_perm] * hinge_sign
    return qpos, qvel


def mirror(x: np.ndarray, perm_sign: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """x [..., n] mirrored: a map is its own inverse, so mirroring twice gives x back."""
    perm, sign = perm_sign
    return x[..., perm] * sign
