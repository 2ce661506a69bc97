"""One process's share of a collection: its episodes rolled out and written into a writer."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexrl.collection.plan import CollectSettings
from flexrl.errors import FlexrlError
from flexrl.rollout.sources import RANDOM, PolicySource, load_policy_source
from flexrl.store import Episode, Lineage, ShardWriter
from flexrl.workspace import Workspace


@dataclass(frozen=True)
class Job:
    """One process's share of a collection (picklable, sent to spawned workers)."""

    settings: CollectSettings
    workspace: Path
    checkpoint: Path | None
    policy_id: str
    lineage: Lineage
    episode_ids: range


def run_episodes(job: Job) -> Iterator[Episode]:
    """Roll out the job's episodes (episode k resets with seed + k); yield each as it ends."""
    from flexrl.rollout.loop import EpisodeSpec, rollout
    from flexrl.rollout.slots import EnvSlots

    settings = job.settings
    source = load_source(job)
    told = settings.instructions
    specs = [
        EpisodeSpec(k, settings.seed + k)
        if not told
        else EpisodeSpec(
            k, settings.seed + k, "goal", told[k % len(told)][1], told[k % len(told)][0]
        )
        for k in job.episode_ids
    ]
    slots = EnvSlots(settings.env, min(settings.num_envs, len(specs)))
    try:
        actor = source.make_actor(slots.action_space, settings.noise, settings.stochastic)
        try:
            for rolled in rollout(
                slots,
                actor,
                specs,
                policy=job.policy_id,
                allow_nonfinite=settings.allow_nonfinite,
            ):
                yield rolled.episode
        except FlexrlError as e:
            raise FlexrlError(f"{settings.dataset}, {e}") from None
    finally:
        slots.close()


def load_source(job: Job) -> PolicySource:
    """The job's policy, from the checkpoint the plan resolved (a worker re-reads it)."""
    if job.checkpoint is None:
        return load_policy_source(Workspace(job.workspace), RANDOM)
    return load_policy_source(Workspace(job.workspace), str(job.checkpoint))


def write_episodes(job: Job, writer: ShardWriter, on_episode: Callable[[Episode], None]) -> None:
    for episode in run_episodes(job):
        writer.add(episode)
        on_episode(episode)


def split_episodes(episodes: int, workers: int) -> list[range]:
    """Contiguous blocks of episode indices, as equal as possible (disjoint seeds). Ranges,
    not lists: a worker's job is pickled through a pipe, and a million ints would block it."""
    bounds = np.linspace(0, episodes, workers + 1).round().astype(int)
    return [range(int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds)]
