"""Run a collection plan: roll the episodes out, commit them, report what was committed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexrl.collection.jobs import Job, split_episodes, write_episodes
from flexrl.collection.plan import CollectPlan, env_name
from flexrl.collection.workers import run_workers
from flexrl.rollout.progress import EpisodeProgress
from flexrl.store import Lineage, ResolvedVersion, ShardWriter, resolve
from flexrl.workspace import Artifact, ArtifactKind, Run


@dataclass
class CollectResult:
    run_id: str
    dataset: str
    seed: int
    versions: list[ResolvedVersion]
    previous: ResolvedVersion | None  # the version this collection appended to; None: new
    episodes: int
    steps: int
    returns: list[float]
    seconds: float

    @property
    def ref(self) -> str | None:
        """The version holding the whole collection (the last one created)."""
        return self.versions[-1].ref if self.versions else None

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "dataset": self.dataset,
            "ref": self.ref,
            "previous": self.previous.ref if self.previous else None,
            "seed": self.seed,
            "versions": [{"ref": v.ref, "digest": v.digest} for v in self.versions],
            "episodes": self.episodes,
            "steps": self.steps,
            "mean_return": self.mean_return,
            "std_return": float(np.std(self.returns)) if self.returns else float("nan"),
            "seconds": round(self.seconds, 3),
        }


def collect(plan: CollectPlan, run: Run, progress: bool = True) -> CollectResult:
    """Roll the plan out and commit it into the store; lineage goes into `run`'s record."""
    from flexrl.seeding import seed_everything
    from flexrl.workspace.provenance import code_version

    code, _diff = code_version()
    settings = plan.settings
    lineage = Lineage(
        producer_run=run.id,
        policy_digest=None if plan.checkpoint is None else plan.policy_id,
        code_version=code.git_commit or code.flexrl_version,
    )
    seed_everything(settings.seed, torch_threads=1)
    shares = split_episodes(settings.episodes, settings.workers)
    jobs = [
        Job(
            settings=settings,
            workspace=plan.workspace,
            checkpoint=plan.checkpoint,
            policy_id=plan.policy_id,
            lineage=lineage,
            episode_ids=share,
        )
        for share in shares
    ]
    versions: list[ResolvedVersion] = []

    def committed(version: int) -> None:
        resolved = resolve(f"{settings.dataset}@v{version}", plan.workspace)
        versions.append(resolved)
        run.add_output(
            Artifact(
                kind=ArtifactKind.DATASET, ref=resolved.ref, digest=resolved.digest, role="data"
            )
        )

    description = f"collect {settings.dataset}"
    workers = f", {len(jobs)} workers" if len(jobs) > 1 else ""
    with EpisodeProgress(settings.episodes, description, progress) as bar:
        # One version for the whole collection: with workers, this writer adopts their shards.
        with ShardWriter(
            settings.dataset,
            plan.workspace,
            lineage=lineage,
            message=(
                f"flexrl collect: {settings.episodes} episodes, policy {settings.policy}, "
                f"{env_name(settings.env)}, seed {settings.seed}{workers}"
            ),
            allow_nonfinite=settings.allow_nonfinite,
            float32=not settings.float64,
        ) as writer:
            if len(jobs) == 1:
                write_episodes(
                    jobs[0], writer, lambda ep: bar.advance(ep.length, ep.episode_return)
                )
            else:
                run_workers(jobs, bar, writer)
        for manifest in writer.committed:
            committed(manifest.version)
    # Versions only append: the one before this collection's first is what it was added to.
    first = versions[0].version if versions else 1
    previous = resolve(f"{settings.dataset}@v{first - 1}", plan.workspace) if first > 1 else None
    result = CollectResult(
        run_id=run.id,
        dataset=settings.dataset,
        seed=settings.seed,
        versions=versions,
        previous=previous,
        episodes=len(bar.returns),
        steps=bar.steps,
        returns=bar.returns,
        seconds=time.monotonic() - bar.t0,
    )
    run.log_metrics(
        result.steps,
        {
            "episodes": result.episodes,
            "steps": result.steps,
            "mean_return": result.mean_return,
            "episodes_per_s": result.episodes / max(result.seconds, 1e-9),
            "steps_per_s": result.steps / max(result.seconds, 1e-9),
        },
    )
    return result
