"""Per-episode and per-task metrics of rolled-out episodes.

Per episode (`EpisodeResult`): return, length, whether it ended before the time limit (a fall,
for Humanoid), and for Humanoid skills the tracking errors (the per-step norm of heading-frame
[vx, vy] minus the command's, and |yaw rate - commanded yaw rate|, averaged over the episode),
the mean forward speed, and two cross-checks from positions and orientations rather than
velocities: the metres moved along the commanded direction and the radians turned the
commanded way. Per task (`TaskMetrics`): the means over its episodes, and the fall rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexrl.store import Episode


@dataclass
class EpisodeResult:
    task: str
    seed: int | None
    episode_return: float
    length: int
    terminated: bool  # ended before the time limit (a fall, for Humanoid)
    lin_vel_error: float | None = None  # mean over steps of |lin_vel - goal[:2]|
    yaw_rate_error: float | None = None  # mean over steps of |yaw_rate - goal[2]|
    forward_speed: float | None = None  # mean over steps of lin_vel[0] (heading frame, m/s)
    # metres the torso moved along the commanded direction, from its positions (a cross-check
    # of the velocities); None where the command never asked for motion (turning on the spot)
    distance: float | None = None
    # radians the torso's heading turned in the commanded direction, from its orientations
    # (a cross-check of the yaw rates); None where no turn was ever commanded
    turned: float | None = None
    # the command [vx, vy, yaw_rate] in force at the last step: where a fall happened (goal
    # commands change mid-episode; the falls of a goal policy cluster by command)
    command_at_end: list[float] | None = None
    # `flexrl eval --instruction`: per instruction, what the body did and how well it matched
    # (flexrl/language/feedback.py, as JSON)
    feedback: list[dict[str, Any]] | None = None


def episode_result(episode: Episode, start: Mapping[str, Any]) -> EpisodeResult:
    """The metrics of a finished episode; `start` is its reset info (where it started)."""
    result = EpisodeResult(
        task=episode.task or "",
        seed=episode.seed,
        episode_return=episode.episode_return,
        length=episode.length,
        terminated=bool(episode.terminations[-1]),
    )
    infos, goals = episode.infos, episode.goals
    if goals is None or "lin_vel" not in infos or "yaw_rate" not in infos:
        return result  # not a Humanoid skill: nothing is tracked
    lin_vel, yaw_rate = infos["lin_vel"], infos["yaw_rate"]
    result.command_at_end = [float(x) for x in goals[-1]]
    result.lin_vel_error = float(np.mean(np.linalg.norm(lin_vel - goals[:, :2], axis=1)))
    result.yaw_rate_error = float(np.mean(np.abs(yaw_rate - goals[:, 2])))
    result.forward_speed = float(np.mean(lin_vel[:, 0]))
    if "xy" in infos and "heading" in infos and "xy" in start and "heading" in start:
        # where each step began: the reset, then the step before
        xy = np.concatenate([np.asarray(start["xy"])[None], infos["xy"]])
        heading = np.concatenate([[float(start["heading"])], infos["heading"]])
        result.distance = distance_along_command(xy, heading, goals)
        result.turned = turn_toward_command(heading, goals)
    return result


def distance_along_command(xy: np.ndarray, heading: np.ndarray, goals: np.ndarray) -> float | None:
    """Metres moved along the commanded velocity's direction, summed over the steps that
    command motion; the command is in the heading frame of the step's start. `xy` [T+1, 2] and
    `heading` [T+1] are the torso's before every step and after the last, `goals` [T, 3]."""
    command = goals[:, :2]
    speed = np.linalg.norm(command, axis=1)
    moving = speed >= 1e-6
    if not moving.any():
        return None
    c, s = np.cos(heading[:-1]), np.sin(heading[:-1])
    direction = np.stack(
        [c * command[:, 0] - s * command[:, 1], s * command[:, 0] + c * command[:, 1]], axis=1
    )
    moved = np.sum(np.diff(xy, axis=0) * direction, axis=1)
    return float(np.sum(moved[moving] / speed[moving]))


def turn_toward_command(heading: np.ndarray, goals: np.ndarray) -> float | None:
    """Radians the heading turned, signed so that turning the commanded way is positive, summed
    over the steps that command a turn (`heading` [T+1] as above, `goals` [T, 3])."""
    command = goals[:, 2]
    turning = np.abs(command) >= 1e-6
    if not turning.any():
        return None
    change = np.diff(heading)
    change = (change + np.pi) % (2 * np.pi) - np.pi  # across the +-pi seam
    return float(np.sum(change[turning] * np.sign(command[turning])))


@dataclass
class TaskMetrics:
    task: str
    episodes: int
    return_mean: float
    return_std: float
    length_mean: float
    fall_rate: float
    lin_vel_error: float | None = None
    yaw_rate_error: float | None = None
    forward_speed: float | None = None
    distance: float | None = None  # mean over episodes
    turned: float | None = None  # mean over episodes

    @classmethod
    def from_episodes(cls, task: str, results: list[EpisodeResult]) -> TaskMetrics:
        returns = np.array([r.episode_return for r in results])

        def mean_of(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return float(np.mean(known)) if known else None

        return cls(
            task=task,
            episodes=len(results),
            return_mean=float(returns.mean()),
            return_std=float(returns.std()),
            length_mean=float(np.mean([r.length for r in results])),
            fall_rate=float(np.mean([r.terminated for r in results])),
            lin_vel_error=mean_of([r.lin_vel_error for r in results]),
            yaw_rate_error=mean_of([r.yaw_rate_error for r in results]),
            forward_speed=mean_of([r.forward_speed for r in results]),
            distance=mean_of([r.distance for r in results]),
            turned=mean_of([r.turned for r in results]),
        )
