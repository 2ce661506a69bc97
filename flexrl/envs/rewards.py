"""Shaped Humanoid reward as pure, batched numpy functions of simulator state.

Everything here takes arrays with a leading batch axis N and no environment object, so the
gymnasium env calls it with N=1 and a batched simulator (MJX, MuJoCo Warp) can call it with
N=4096 without a rewrite.

Frames. MuJoCo's free joint stores its linear velocity qvel[0:3] in the WORLD frame and its
angular velocity qvel[3:6] in the BODY (torso) frame. Commands live in the heading frame: the
world frame rotated by the torso's yaw only, so "forward" stays horizontal when the torso
leans. The yaw rate is the world-z component of the angular velocity, so the body-frame
vector must be rotated by the torso orientation first (a pitched torso spinning about its
own x axis is not turning).
"""

from __future__ import annotations

import numpy as np

from flexrl.config import RewardConfig

TERM_NAMES = (
    "tracking_lin_vel",
    "tracking_yaw_rate",
    "healthy",
    "ctrl",
    "contact",
    "yaw_rate_cost",
    "action_rate",
)
# With env.observe_tracking, also "yaw_rate_wobble", "tracking_yaw_rate_mean" and
# "tracking_lin_vel_mean" (they read its running means); a plain env keeps these, and so do the
# columns of its datasets. With reward.upright > 0, also "upright".


def heading_yaw(quat: np.ndarray) -> np.ndarray:
    """Yaw (rad) of the body x axis projected on the ground; quat is [N, 4] as (w, x, y, z)."""
    w, x, y, z = quat[:, 0], quat[:, 1], quat[:, 2], quat[:, 3]
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def tilt_sq(quat: np.ndarray) -> np.ndarray:
    """[N] sin^2 of the angle between the body z axis and the vertical: the squared horizontal
    part of the body's up vector (legged_gym's projected gravity, x^2 + y^2)."""
    w, x, y, z = quat[:, 0], quat[:, 1], quat[:, 2], quat[:, 3]
    return np.square(2.0 * (x * z + w * y)) + np.square(2.0 * (y * z - w * x))


def lin_vel_heading(quat: np.ndarray, lin_vel_world: np.ndarray) -> np.ndarray:
    """[N, 2] horizontal velocity (forward, left) in the heading frame from world [N, >=2]."""
    yaw = heading_yaw(quat)
    c, s = np.cos(yaw), np.sin(yaw)
    vx, vy = lin_vel_world[:, 0], lin_vel_world[:, 1]
    return np.stack([c * vx + s * vy, -s * vx + c * vy], axis=1)


def body_yaw_rate(
    angmom_z: np.ndarray,
    com_xy: np.ndarray,
    body_xy: np.ndarray,
    body_rot_z: np.ndarray,
    mass: np.ndarray,
    inertia: np.ndarray,
) -> np.ndarray:
    """[N] yaw rate of a whole articulated body (rad/s, + is a left turn): its angular
    momentum about the vertical through its centre of mass [N] over its moment of inertia
    about that axis, the rotational counterpart of the centre-of-mass velocity. A body turning
    rigidly at w gets w; limbs swinging against each other in a stride cancel out, where the
    torso's own yaw rate swings by ~0.5 rad/s at every step.

    Per part b of B: centre of mass `body_xy` [N, B, 2], the third row of its inertial frame's
    rotation `body_rot_z` [N, B, 3], `mass` [B] and principal `inertia` [B, 3]."""
    offset_sq = ((body_xy - com_xy[:, None, :]) ** 2).sum(axis=2)
    own = (body_rot_z**2 * inertia[None]).sum(axis=2)  # (R diag(I) R^T)_zz
    inertia_z = (own + mass[None] * offset_sq).sum(axis=1)
    return angmom_z / inertia_z


def shaped_reward(
    lin_vel: np.ndarray,
    yaw_rate: np.ndarray,
    command: np.ndarray,
    healthy: np.ndarray,
    ctrl: np.ndarray,
    contact_forces: np.ndarray,
    params: RewardConfig,
    last_ctrl: np.ndarray | None = None,
    tracked_mean: np.ndarray | None = None,
    tilt: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Reward and its terms for N states.

    lin_vel [N, 2] heading-frame velocity, yaw_rate [N] world yaw rate, command [N, 3] as
    [vx, vy, yaw_rate], healthy [N] bool, ctrl [N, nu], contact_forces [N, ...] (cfrc_ext),
    last_ctrl [N, nu] the previous step's controls (zeros after a reset; None: zeros),
    tracked_mean [N, 3] the running means of [vx, vy, yaw_rate] over ~1 s up to the last step
    (None: none of the three running-mean terms), tilt [N] the torso's `tilt_sq` (read only
    when params.upright > 0).
    Returns total [N] and {term: [N]} where total == sum of the terms (costs are negative).
    """
    if last_ctrl is None:
        last_ctrl = np.zeros_like(ctrl)
    lin_err = np.sum(np.square(command[:, :2] - lin_vel), axis=1)
    yaw_err = np.square(command[:, 2] - yaw_rate)
    contact = np.sum(np.square(contact_forces.reshape(len(contact_forces), -1)), axis=1)
    terms = {
        "tracking_lin_vel": params.tracking_lin_vel * np.exp(-lin_err / params.lin_vel_sigma),
        "tracking_yaw_rate": params.tracking_yaw_rate * np.exp(-yaw_err / params.yaw_rate_sigma),
        "healthy": params.healthy * healthy.astype(np.float64),
        "ctrl": -params.ctrl * np.sum(np.square(ctrl), axis=1),
        # Clipped as in Humanoid-v5: a hard landing must not swamp the episode's return.
        "contact": -np.minimum(params.contact * contact, params.contact_max),
        # The kernel above saturates: far from the command it barely pulls. A quadratic cost
        # keeps pulling, and punishes the torso twisting back and forth at every stride. It
        # stops growing at 1 (rad/s)^2, so a body spinning as it falls cannot make ending the
        # episode early pay (every step must be worth living).
        "yaw_rate_cost": -params.yaw_rate_cost * np.minimum(yaw_err, 1.0),
        "action_rate": -params.action_rate * np.sum(np.square(ctrl - last_ctrl), axis=1),
    }
    if tracked_mean is not None:
        yaw_rate_mean = tracked_mean[:, 2]
        # The twist of every stride alone, apart from the turn's mean: the yaw rate against its
        # own ~1 s running mean (capped as yaw_rate_cost is).
        wobble = np.minimum(np.square(yaw_rate - yaw_rate_mean), 1.0)
        terms["yaw_rate_wobble"] = -params.yaw_rate_wobble * wobble
        # The mean turn against the command, the stride's twist averaged out.
        mean_err = np.square(command[:, 2] - yaw_rate_mean)
        terms["tracking_yaw_rate_mean"] = params.tracking_yaw_rate_mean * np.exp(
            -mean_err / params.yaw_rate_mean_sigma
        )
        # Likewise the speed: a narrow kernel on the mean pays for the right speed without
        # charging each stride's surge, as a narrow per-step kernel would.
        lin_mean_err = np.sum(np.square(command[:, :2] - tracked_mean[:, :2]), axis=1)
        terms["tracking_lin_vel_mean"] = params.tracking_lin_vel_mean * np.exp(
            -lin_mean_err / params.lin_vel_mean_sigma
        )
    if params.upright > 0:
        terms["upright"] = -params.upright * tilt
    # Added one by one: numpy sums 8 rows or more pairwise when N is 1, which would round a
    # single env's reward differently from the same env's in a batch.
    total = np.zeros_like(yaw_rate)
    for term in terms.values():
        total = total + term
    return total, terms
