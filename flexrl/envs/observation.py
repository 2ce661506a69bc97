"""Humanoid-v5's observation seen from the heading frame, so it reads the same whichever way the
body faces.

Humanoid-v5 observes the torso's orientation, its linear velocity and the com-based inertias,
velocities and contact forces of every body in world-aligned axes. A policy trained facing one
way has never seen those values facing another: zoo:walk_forward, started 45 degrees to the
side, falls within about a second. Turning needs every heading, so the world-aligned parts are
rotated about the vertical by minus the torso's heading (`flexrl.envs.rewards.heading_yaw`).
Nothing else changes: height, tilt, joint angles and speeds, body-frame angular velocity and
actuator forces are already the same at every heading.

Layout of the 348 values (the free joint's x and y excluded, the world body's rows too):
  [0:22]    qpos[2:]: torso height, torso quaternion (w, x, y, z), 17 joint angles
  [22:45]   qvel: torso linear velocity (world), angular velocity (torso frame), 17 joints
  [45:175]  cinert of 13 bodies: inertia (xx, yy, zz, xy, xz, yz), mass * offset (3), mass
  [175:253] cvel of 13 bodies: angular (3), linear (3), world-aligned
  [253:270] qfrc_actuator of the 17 joints
  [270:348] cfrc_ext of 13 bodies: torque (3), force (3), world-aligned
"""

from __future__ import annotations

import numpy as np

from flexrl.envs.rewards import heading_yaw

QUAT = slice(1, 5)
LIN_VEL = slice(22, 25)
CINERT = slice(45, 175)
CVEL = slice(175, 253)
CFRC_EXT = slice(270, 348)


def heading_frame(obs: np.ndarray) -> np.ndarray:
    """A copy of Humanoid-v5 observations [N, 348] with their world-aligned parts in the heading
    frame: the torso quaternion without its heading, and every world vector and inertia tensor
    rotated by minus the heading. Batched: vector envs turn all their observations at once."""
    out = obs.copy()
    n = len(obs)
    yaw = heading_yaw(obs[:, QUAT])
    c, s = np.cos(yaw), np.sin(yaw)
    to_heading = np.zeros((n, 3, 3))  # per row: world -> heading frame
    to_heading[:, 0, 0], to_heading[:, 0, 1] = c, s
    to_heading[:, 1, 0], to_heading[:, 1, 1] = -s, c
    to_heading[:, 2, 2] = 1.0

    half_c, half_s = np.cos(yaw / 2), np.sin(yaw / 2)  # q_heading^-1 * q: (w, x, y, z)
    w, x, y, z = obs[:, QUAT].T
    out[:, QUAT] = np.stack(
        [
            half_c * w + half_s * z,
            half_c * x + half_s * y,
            half_c * y - half_s * x,
            half_c * z - half_s * w,
        ],
        axis=1,
    )
    from_right = to_heading.transpose(0, 2, 1)  # row vectors times this: rotated row vectors
    out[:, LIN_VEL] = (obs[:, None, LIN_VEL] @ from_right)[:, 0]
    for part in (CVEL, CFRC_EXT):  # [bodies, (3 angular, 3 linear)]: both halves rotate
        rows = obs[:, part].reshape(n, -1, 3)
        out[:, part] = (rows @ from_right).reshape(n, -1)

    cinert = obs[:, CINERT].reshape(n, -1, 10)
    xx, yy, zz, xy, xz, yz = np.moveaxis(cinert[..., :6], -1, 0)
    tensors = np.stack(
        [np.stack([xx, xy, xz], -1), np.stack([xy, yy, yz], -1), np.stack([xz, yz, zz], -1)], -2
    )  # [n, bodies, 3, 3]
    turned = to_heading[:, None] @ tensors @ to_heading[:, None].transpose(0, 1, 3, 2)
    rotated = np.concatenate(
        [
            turned[..., [0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]],
            cinert[..., 6:9] @ from_right,
            cinert[..., 9:],
        ],
        axis=-1,
    )
    out[:, CINERT] = rotated.reshape(n, -1)
    return out
