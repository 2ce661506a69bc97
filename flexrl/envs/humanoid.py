"""Humanoid skills on gymnasium's Humanoid-v5: walk forward, turn left/right, follow a goal.

Observation: a flat Box of 351 float64 values (a flat Box keeps PPO, normalisers and the store
simple): Humanoid-v5's 348 values, then the goal command appended at
`obs[GOAL_SLICE] == obs[348:351] == [vx, vy, yaw_rate]` (heading-frame m/s, m/s, world rad/s).
Every task sets this goal (walk_forward -> [speed, 0, 0], turn_left -> [turn_speed, 0, +rate],
turn_right -> [turn_speed, 0, -rate], goal -> sampled), so one policy can learn all skills and a
multi-task policy is conditioned explicitly.

With `observation_frame="heading"` the 348 values are seen from the heading frame, the same at
every heading (flexrl.envs.observation): what a policy that turns needs.

With `observe_tracking=True`, 6 more values follow at `obs[TRACKING_SLICE] == obs[351:357]`: the
measured [vx, vy, yaw_rate] the reward compares with the goal (centre-of-mass velocity in the
heading frame, whole-body yaw rate: below), then their running means over about a second
(exponential, time constant `TRACKING_TAU`). Humanoid-v5 observes the torso, whose yaw rate
swings ~0.5 rad/s at every stride: without these a policy cannot see its own turning rate, nor
a slow drift of it. The goal stays at obs[348:351] either way.

Reward: `flexrl.envs.rewards.shaped_reward` (exp-kernel velocity and yaw-rate tracking,
healthy bonus; control, contact, yaw-rate, action-rate and torso-lean costs), computed from the
simulator state and the last two actions. The episode terminates on a fall (torso height outside
`healthy_z_range`).

Info, on reset and on every step:
  goal        [3] the command this step was rewarded against, i.e. the goal in the observation
              the action was chosen from (a resample shows up in the *returned* observation);
  task_id     int index into `flexrl.envs.tasks.TASKS`;
  lin_vel     [2] heading-frame (forward, left) velocity of the centre of mass;
  yaw_rate    the whole body's yaw rate (rad/s, + turns left): its angular momentum about the
              vertical through the centre of mass over its moment of inertia about that axis;
  xy          [2] torso position in the world frame (m);
  heading     the torso's yaw in the world frame (rad);
  reward_terms {term: float} whose values sum to the reward (step only).

Multi-task: with `task_weights`, each reset draws the episode's task from those weights;
`reset(options={"task": T})` picks the task of one episode instead (evaluation per skill).
`goal` resamples its command every `command.resample_steps` steps. All randomness uses the
env's `np_random`, so `reset(seed=...)` makes tasks and commands reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv
from gymnasium.spaces import Box

from flexrl.config import CommandConfig, ObservationFrame, RewardConfig, Task
from flexrl.envs.observation import heading_frame
from flexrl.envs.rewards import (
    body_yaw_rate,
    heading_yaw,
    lin_vel_heading,
    shaped_reward,
    tilt_sq,
)
from flexrl.envs.tasks import GOAL_DIM, TASKS, sample_goal, sample_task, task_id, task_probabilities

BASE_OBS_DIM = 348
GOAL_SLICE = slice(BASE_OBS_DIM, BASE_OBS_DIM + GOAL_DIM)
TRACKING_DIM = 6
TRACKING_SLICE = slice(GOAL_SLICE.stop, GOAL_SLICE.stop + TRACKING_DIM)
TRACKING_TAU = 1.0  # s: longer than a stride (~0.7 s), so the running mean shows the drift


class HumanoidSkillEnv(HumanoidEnv):
    """Humanoid-v5 with flexrl's goal-conditioned skills and shaped reward."""

    def __init__(
        self,
        task: Task = "walk_forward",
        task_weights: Mapping[Task, float] | None = None,
        command: CommandConfig | Mapping[str, Any] | None = None,
        reward: RewardConfig | Mapping[str, Any] | None = None,
        healthy_z_range: tuple[float, float] = (1.0, 2.0),
        observation_frame: ObservationFrame = "world",
        observe_tracking: bool = False,
        **kwargs: Any,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        self.default_task: Task = task
        self.task_probs = task_probabilities(task_weights) if task_weights else None
        self.command_cfg = CommandConfig.model_validate(command or {})
        self.reward_cfg = RewardConfig.model_validate(reward or {})
        self.observation_frame = observation_frame
        self.observe_tracking = observe_tracking
        self.tracked: np.ndarray | None = None  # running mean of [vx, vy, yaw_rate]; None: reset
        # Set before HumanoidEnv.__init__, which may build an observation; reset sets them.
        self.task: Task = task
        self.goal = np.zeros(GOAL_DIM)
        self.episode_steps = 0
        self.last_ctrl = np.zeros(17)  # Humanoid's 17 actuators; the action-rate cost reads it
        self._next_task: Task | None = None
        self._next_command: np.ndarray | None = None
        self._held = False  # this episode's goal is a command given at reset: never resampled
        # How far the trainer's command curriculum has widened the goal ranges (1: the full
        # ranges, as everywhere but in training; flexrl.rl.envs.set_every_env)
        self.command_progress = 1.0
        # Whether goal commands are drawn as in training (CommandConfig.train_slow_prob); the
        # trainer sets it, everything else draws from the ranges as given.
        self.command_training = False
        super().__init__(healthy_z_range=healthy_z_range, **kwargs)
        utils.EzPickle.__init__(
            self,
            task,
            task_weights,
            command,
            reward,
            healthy_z_range,
            observation_frame,
            observe_tracking,
            **kwargs,
        )
        obs_dim = BASE_OBS_DIM + GOAL_DIM + (TRACKING_DIM if observe_tracking else 0)
        self.observation_space = Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float64)

    # --- episode structure -------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """`options={"task": T}` runs this episode as task T (e.g. to evaluate one skill);
        `options={"task": "goal", "command": [vx, vy, yaw_rate]}` holds it at that command (an
        instruction collected with `flexrl collect --instructions`)."""
        task = (options or {}).get("task")
        if task is not None and task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        command = (options or {}).get("command")
        if command is not None and (task != "goal" or np.shape(command) != (GOAL_DIM,)):
            raise ValueError(f"a command needs the goal task and {GOAL_DIM} values: {command!r}")
        self._next_task = task
        self._next_command = None if command is None else np.array(command, dtype=np.float64)
        return super().reset(seed=seed, options=options)

    def reset_model(self) -> np.ndarray:
        if self._next_task is not None:
            self.task = self._next_task
        elif self.task_probs is not None:
            self.task = sample_task(self.task_probs, self.np_random)
        else:
            self.task = self.default_task
        self._held = self._next_command is not None
        if self._next_command is not None:
            self.goal = self._next_command.copy()
        else:
            self.goal = sample_goal(
                self.task,
                self.command_cfg,
                self.np_random,
                progress=self.command_progress,
                training=self.command_training,
            )
        self.episode_steps = 0
        self.last_ctrl = np.zeros(self.model.nu)
        self.tracked = None
        return super().reset_model()  # its noise, then our _get_obs with the new goal

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.do_simulation(action, self.frame_skip)
        obs, rewards, terminated, infos = finish_steps([self])
        if self.render_mode == "human":
            self.render()
        return obs[0], float(rewards[0]), bool(terminated[0]), False, infos[0]

    def advance(self) -> dict[str, Any]:
        """Count a simulated step and resample the command if due; returns the task info of the
        step (its goal is the one it was rewarded against, before any resample)."""
        self.episode_steps += 1
        self.last_ctrl = self.data.ctrl.copy()
        info = self._task_info()
        due = self.episode_steps % self.command_cfg.resample_steps == 0
        if self.task == "goal" and due and not self._held:
            span = self.episode_steps // self.command_cfg.resample_steps
            self.goal = sample_goal(
                self.task,
                self.command_cfg,
                self.np_random,
                span,
                self.command_progress,
                self.command_training,
            )
        return info

    def render(self) -> Any:
        # gymnasium renders offscreen through a free camera, on which Humanoid's trackbodyid
        # does nothing: a walker leaves the frame. Keep the camera on the torso.
        viewer = self.mujoco_renderer.viewer
        if viewer is not None:
            viewer.cam.lookat[:] = self.data.qpos[:3]
        return super().render()

    def _get_obs(self) -> np.ndarray:
        return observe_batch([self])[0]

    def _get_reset_info(self) -> dict[str, Any]:
        return {**self._task_info(), **self._measure()}

    def _task_info(self) -> dict[str, Any]:
        return {"goal": self.goal.copy(), "task_id": task_id(self.task)}

    # --- exact state for resuming (see flexrl.rl.envs) ----------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The episode state kept outside MuJoCo and `np_random`, as plain values that survive
        `torch.save` and `torch.load(weights_only=True)` (the goal as exact float64 floats)."""
        return {
            "task": self.task,
            "next_task": self._next_task,
            "goal": [float(x) for x in self.goal],
            "episode_steps": int(self.episode_steps),
            "last_ctrl": [float(x) for x in self.last_ctrl],
            "tracked": None if self.tracked is None else [float(x) for x in self.tracked],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        task, next_task = state["task"], state["next_task"]
        if task not in TASKS or (next_task is not None and next_task not in TASKS):
            raise ValueError(f"state_dict: unknown task {task!r} or next_task {next_task!r}")
        goal = np.array(state["goal"], dtype=np.float64)
        if goal.shape != (GOAL_DIM,):
            raise ValueError(f"state_dict: goal must have {GOAL_DIM} values, got {goal.shape}")
        self.task = task
        self._next_task = next_task
        self.goal = goal
        self.episode_steps = int(state["episode_steps"])
        # states saved before the action-rate cost existed have no last controls: zeros
        self.last_ctrl = np.array(state.get("last_ctrl", np.zeros(self.model.nu)), np.float64)
        tracked = state.get("tracked")
        self.tracked = None if tracked is None else np.array(tracked, np.float64)

    # --- reward from the current simulator state -----------------------------------------

    def _measure(self) -> dict[str, Any]:
        return _info_row(measure_batch([self]), 0)

    def evaluate(self) -> tuple[float, dict[str, float], dict[str, Any]]:
        """Reward, its terms and the measured velocities for the current state and goal.

        Reads qpos/qvel/ctrl/cfrc_ext as they are: after `set_state`, call
        `mujoco.mj_rnePostConstraint` too if the contact term matters (step does).
        """
        rewards, terms, measured, _ = evaluate_batch([self])
        return float(rewards[0]), {k: float(v[0]) for k, v in terms.items()}, _info_row(measured, 0)


MEASURED_INFO = ("lin_vel", "yaw_rate", "xy", "heading")


def measure_batch(envs: Sequence[HumanoidSkillEnv]) -> dict[str, np.ndarray]:
    """Of each env's current state: the heading-frame velocity of the centre of mass [N, 2]
    and the whole body's yaw rate [N] (the body's, not the torso's: the torso sways and twists
    with every stride), the torso's position xy [N, 2] and heading yaw [N] (world frame), and
    its height [N] and `tilt_sq` [N]."""
    for env in envs:  # centre-of-mass velocity and momentum: MuJoCo computes them on request
        mujoco.mj_subtreeVel(env.model, env.data)
    model = envs[0].model
    qpos = np.stack([env.data.qpos for env in envs])
    # Body 1 (the torso) is the root of the subtree that holds the whole humanoid.
    com_vel = np.stack([env.data.subtree_linvel[1] for env in envs])
    quat = qpos[:, 3:7]
    return {
        "lin_vel": lin_vel_heading(quat, com_vel),
        "yaw_rate": body_yaw_rate(
            angmom_z=np.array([env.data.subtree_angmom[1][2] for env in envs]),
            com_xy=np.stack([env.data.subtree_com[1][:2] for env in envs]),
            body_xy=np.stack([env.data.xipos[1:, :2] for env in envs]),
            body_rot_z=np.stack([env.data.ximat[1:, 6:9] for env in envs]),
            mass=model.body_mass[1:],
            inertia=model.body_inertia[1:],
        ),
        "xy": qpos[:, 0:2],
        "heading": heading_yaw(quat),
        "height": qpos[:, 2],
        "tilt": tilt_sq(quat),
    }


def observe_batch(
    envs: Sequence[HumanoidSkillEnv], measured: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """The observations [N, 351] (or [N, 357] with `observe_tracking`) of several envs at once
    (the heading-frame rotation batched): what `HumanoidSkillEnv._get_obs` and
    `HumanoidVectorEnv.step` return, bit for bit. `measured`: this state's `measure_batch`, if
    it was taken already."""
    base = np.stack([HumanoidEnv._get_obs(env) for env in envs])
    if envs[0].observation_frame == "heading":
        base = heading_frame(base)
    parts = [base, np.stack([env.goal for env in envs])]
    if envs[0].observe_tracking:
        now = tracked_values(measure_batch(envs) if measured is None else measured)
        # just reset: the mean is the measurement itself (the first step starts it from there)
        means = [now[i] if env.tracked is None else env.tracked for i, env in enumerate(envs)]
        parts += [now, np.stack(means)]
    return np.concatenate(parts, axis=1)


def tracked_values(measured: dict[str, np.ndarray]) -> np.ndarray:
    """[N, 3] the measured [vx, vy, yaw_rate] that the reward compares with the goal."""
    return np.concatenate([measured["lin_vel"], measured["yaw_rate"][:, None]], axis=1)


def track_batch(envs: Sequence[HumanoidSkillEnv], measured: dict[str, np.ndarray]) -> None:
    """Move each env's running mean of [vx, vy, yaw_rate] one step towards this state's."""
    if not envs[0].observe_tracking:
        return
    now = tracked_values(measured)
    keep = np.exp(-envs[0].dt / TRACKING_TAU)
    for env, row in zip(envs, now, strict=True):
        env.tracked = row.copy() if env.tracked is None else keep * env.tracked + (1 - keep) * row


def _info_row(measured: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    """Env i's measured info: arrays for vectors, floats for scalars."""
    return {
        key: measured[key][i].copy() if measured[key].ndim > 1 else float(measured[key][i])
        for key in MEASURED_INFO
    }


def finish_steps(
    envs: Sequence[HumanoidSkillEnv],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """After the physics of a step (`do_simulation`): observations [N, 351], rewards [N],
    terminated [N] (a fall) and each env's step info, batched over several envs. What
    `HumanoidSkillEnv.step` returns for one env, and the rollout loop's envs for many."""
    rewards, terms, measured, healthy = evaluate_batch(envs)
    infos = [
        {
            **env.advance(),
            **_info_row(measured, i),
            "reward_terms": {k: float(v[i]) for k, v in terms.items()},
        }
        for i, env in enumerate(envs)
    ]
    track_batch(envs, measured)
    return observe_batch(envs, measured), rewards, ~healthy, infos


def evaluate_batch(
    envs: Sequence[HumanoidSkillEnv],
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Reward [N], its terms {term: [N]}, the measured velocities and healthy [N] of several
    envs at once, each against its own goal: the one computation behind `HumanoidSkillEnv.step`
    and `flexrl.envs.vector.HumanoidVectorEnv.step`, so they agree bit for bit. All envs share
    the reward parameters and healthy range of the first."""
    first = envs[0]
    measured = measure_batch(envs)
    low, high = first._healthy_z_range
    healthy = (low < measured["height"]) & (measured["height"] < high)
    total, terms = shaped_reward(
        lin_vel=measured["lin_vel"],
        yaw_rate=measured["yaw_rate"],
        command=np.stack([env.goal for env in envs]),
        healthy=healthy,
        ctrl=np.stack([env.data.ctrl for env in envs]),
        contact_forces=np.stack([env.data.cfrc_ext for env in envs]),
        params=first.reward_cfg,
        last_ctrl=np.stack([env.last_ctrl for env in envs]),
        tracked_mean=_tracked_means(envs, measured) if first.observe_tracking else None,
        tilt=measured["tilt"],
    )
    return total, terms, measured, healthy


def _tracked_means(envs: Sequence[HumanoidSkillEnv], measured: dict[str, np.ndarray]) -> np.ndarray:
    """[N, 3] each env's running mean of [vx, vy, yaw_rate] up to the last step (just reset:
    this state's own, so the first step has no wobble)."""
    now = tracked_values(measured)
    return np.stack([now[i] if e.tracked is None else e.tracked for i, e in enumerate(envs)])
