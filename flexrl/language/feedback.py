"""Feedback on what the agent did: a short description of its measured motion, and how well it
matches the instruction it was given.

    motion = motion_of(lin_vel, yaw_rate, goals, fell, dt)   # an episode's (or a span's) steps
    describe(motion)   # "walked forward at 0.92 m/s, drifted left, kept its heading, did not fall"
    judge("walk forward quickly", motion)                   # Feedback(..., success=True)

The score has two parts: the similarity of the instruction and the description in MiniLM's
embedding space (language against language), and the command-tracking errors (numbers against
numbers, per step as `flexrl eval` measures them), which decide `success` with the skills'
thresholds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from flexrl.language.encoder import encode

# The skills' criteria (issue 12): tracked within these, and no fall, is a success.
LIN_VEL_TOLERANCE = 0.25  # m/s, mean |velocity error|
YAW_RATE_TOLERANCE = 0.2  # rad/s, mean |yaw-rate error|
STILL = 0.1  # m/s (or rad/s) below which the description calls it no motion


@dataclass(frozen=True)
class Motion:
    """What the torso did over an episode, measured: mean velocities in the heading frame."""

    vx: float  # m/s forward
    vy: float  # m/s to the left
    yaw_rate: float  # rad/s to the left
    fell: bool
    seconds: float
    lin_vel_error: float  # mean over steps of |[vx, vy] - command|, m/s
    yaw_rate_error: float  # mean over steps of |yaw rate - command|, rad/s


@dataclass(frozen=True)
class Feedback:
    instruction: str
    description: str
    similarity: float  # cosine of instruction and description embeddings
    lin_vel_error: float  # as Motion's
    yaw_rate_error: float
    success: bool  # tracked within the skills' tolerances and did not fall

    def as_json(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def motion_of(
    lin_vel: np.ndarray, yaw_rate: np.ndarray, goals: np.ndarray, fell: bool, dt: float
) -> Motion:
    """Motion from per-step heading-frame velocities [T, 2], yaw rates [T] and commands [T, 3]."""
    vx, vy = (float(v) for v in np.mean(lin_vel, axis=0))
    lin_error = float(np.mean(np.linalg.norm(lin_vel - goals[:, :2], axis=1)))
    yaw_error = float(np.mean(np.abs(yaw_rate - goals[:, 2])))
    return Motion(vx, vy, float(np.mean(yaw_rate)), fell, len(yaw_rate) * dt, lin_error, yaw_error)


def describe(motion: Motion) -> str:
    """A short sentence of what the body did, in the words the instruction grammar uses."""
    vx, vy, yaw = motion.vx, motion.vy, motion.yaw_rate
    side = "left" if vy > 0 else "right"
    parts = []
    if max(abs(vx), abs(vy)) < STILL:
        parts.append("stood still" if abs(yaw) < STILL else "turned on the spot")
    elif abs(vx) >= abs(vy):
        parts.append(f"walked {'forward' if vx > 0 else 'backwards'} at {abs(vx):.2f} m/s")
        if abs(vy) >= STILL:
            parts.append(f"drifted {side}")
    else:
        parts.append(f"stepped to the {side} at {abs(vy):.2f} m/s")
    if abs(yaw) >= STILL:
        parts.append(f"turned {'left' if yaw > 0 else 'right'} at {abs(yaw):.2f} rad/s")
    elif max(abs(vx), abs(vy)) >= STILL:
        parts.append("kept its heading")
    parts.append(f"fell after {motion.seconds:.1f} s" if motion.fell else "did not fall")
    return ", ".join(parts)


def judge(instruction: str, motion: Motion) -> Feedback:
    """How well the motion matches the instruction (its errors are against what it meant)."""
    description = describe(motion)
    a, b = encode([instruction, description])
    lin, yaw = motion.lin_vel_error, motion.yaw_rate_error
    return Feedback(instruction, description, float(a @ b), lin, yaw, succeeded(motion))


def succeeded(motion: Motion) -> bool:
    """Tracked within the skills' tolerances, and did not fall."""
    return (
        motion.lin_vel_error <= LIN_VEL_TOLERANCE
        and motion.yaw_rate_error <= YAW_RATE_TOLERANCE
        and not motion.fell
    )
