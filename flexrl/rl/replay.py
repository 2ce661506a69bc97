"""`flexrl train --record-to NAME`: the training rollouts themselves, as a dataset.

A "replay" dataset holds what the learner saw, from its first clumsy episodes to its best, so
its quality is mixed like D4RL's medium-replay. Episodes are stored as `flexrl collect` stores
them (raw observations, the clipped actions the env got, the env's own rewards, goals, task and
the numeric infos), plus one info, `train_step`: the learner's global step when the step was
taken, so returns can be plotted against training time.

Versions follow checkpoints. An episode is written once the update it ended in is complete,
and the writer commits whenever the run saves a checkpoint (every `ppo.checkpoint_every`
updates, on SIGTERM or Ctrl-C, at the end). So every committed version matches a checkpoint:
after a kill -9, `flexrl train --resume RUN --record-to NAME` continues from the last
checkpoint and records what follows it, with no episode twice. Episodes that were running at
a resume (or at the start of a recorded gap) have lost their beginning and are not recorded.
`every=K` keeps one episode in K (the 1st, the K+1th, ... this process saw begin).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from flexrl.config import TASKS
from flexrl.errors import FlexrlError
from flexrl.store import Episode, Lineage, ShardWriter, resolve
from flexrl.store.recording import EpisodeBuffer, check_dataset_name
from flexrl.workspace import Artifact, ArtifactKind, Run


def env_info(infos: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Env i's info out of a vector env's infos (arrays with `_key` masks, nested dicts)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        mask = infos.get(f"_{key}")
        if mask is not None and not mask[i]:
            continue
        out[key] = env_info(value, i) if isinstance(value, Mapping) else value[i]
    return out


def check_record_target(writer: ShardWriter, observation_shape: tuple[int, ...]) -> None:
    """The dataset must be new, or hold observations of this env's shape."""
    existing = writer.schema
    if existing is not None and tuple(existing.observations.shape) != tuple(observation_shape):
        raise FlexrlError(
            f"--record-to: dataset {writer.paths.name!r} holds observations of shape "
            f"{tuple(existing.observations.shape)}; the env gives {tuple(observation_shape)}: "
            "record into a new dataset"
        )


class ReplayRecorder:
    """Turns a vector env's steps into stored episodes; see the module docstring."""

    def __init__(
        self,
        run: Run,
        dataset: str,
        num_envs: int,
        observation_shape: tuple[int, ...],
        every: int = 1,
    ):
        check_dataset_name(dataset, "--record-to")
        if every < 1:
            raise FlexrlError(f"--record-every must be at least 1, got {every}")
        from flexrl.workspace.provenance import code_version

        code, _diff = code_version()
        self.run = run
        self.dataset = dataset
        self.every = every
        self.policy = f"replay:{run.id}"
        self.writer = ShardWriter(
            dataset,
            run.workspace.root,
            lineage=Lineage(
                producer_run=run.id, code_version=code.git_commit or code.flexrl_version
            ),
            message=f"flexrl train {run.id}: training rollouts",
            float32=True,  # as collect stores them (a dataset that holds float64 keeps it)
        )
        check_record_target(self.writer, observation_shape)
        self.slots: list[EpisodeBuffer | None] = [None] * num_envs
        self.finished: list[Episode] = []  # ended in the current update
        self.info_keys: dict[str, np.ndarray] | None = None
        self.begun = 0
        self.episodes = 0
        self.steps = 0

    def _begin(self, i: int, obs: np.ndarray, info: Mapping[str, Any]) -> None:
        keep = self.begun % self.every == 0
        task_id = info.get("task_id")
        task = TASKS[int(task_id)] if task_id is not None else None
        self.slots[i] = EpisodeBuffer(self.begun, None, obs, task, self.policy) if keep else None
        self.begun += 1

    def reset(self, obs: np.ndarray, infos: Mapping[str, Any]) -> None:
        """Every env started a new episode (the training's first reset)."""
        for i in range(len(self.slots)):
            self._begin(i, obs[i], env_info(infos, i))

    def step(
        self,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminations: np.ndarray,
        truncations: np.ndarray,
        infos: Mapping[str, Any],
        next_obs: np.ndarray,
        train_step: int,
    ) -> None:
        """One vector step (SAME_STEP autoreset): `next_obs` already holds the new episodes'
        first observations; the ended ones' last are in infos["final_obs"]."""
        final_infos = infos.get("final_info", {})
        for i, ep in enumerate(self.slots):
            done = bool(terminations[i] or truncations[i])
            if ep is not None:
                info = env_info(final_infos if done else infos, i)
                info["train_step"] = np.int64(train_step)
                ep.record(actions[i], rewards[i], terminations[i], truncations[i], info)
                if self.info_keys is None:  # fixed by the first step, as collect does
                    self.info_keys = ep.infos[0]
                if done:
                    self.finished.append(ep.finish(infos["final_obs"][i], self.info_keys))
                else:
                    ep.obs = next_obs[i]
            if done:
                self._begin(i, next_obs[i], env_info(infos, i))

    def end_update(self) -> None:
        """The update is complete: its finished episodes belong to the next checkpoint."""
        for ep in self.finished:
            self.writer.add(ep)
            self.episodes += 1
            self.steps += ep.length
        self.finished = []

    def commit(self) -> None:
        """Commit everything written since the last commit, as the checkpoint is saved."""
        manifest = self.writer.commit()
        if manifest is not None:
            resolved = resolve(f"{self.dataset}@v{manifest.version}", self.run.workspace.root)
            self.run.add_output(
                Artifact(
                    kind=ArtifactKind.DATASET,
                    ref=resolved.ref,
                    digest=resolved.digest,
                    role="replay",
                )
            )

    def abort(self) -> None:
        """Drop what no checkpoint covers (a failed run)."""
        self.writer.abort()
