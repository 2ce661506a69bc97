"""What a run directory holds, as pydantic models (the on-disk format of `workspace/runs/`).

    workspace/runs/<run-id>/
        run.json          RunRecord: identity, status, times, seed, inputs, outputs, metrics summary
        provenance.json   Provenance: command line, code version, Python, packages, host
        recipe.yaml       the fully resolved recipe (when the command took one)
        code.diff         uncommitted changes of the code, when the tree was dirty
        metrics.csv       one row per logged step
        artifacts/        files the run produced (checkpoints, videos, ...), digests in run.json

run.json is small and rewritten atomically by the run's own process only, so `runs ls` reads
thousands of them quickly and never sees a torn file.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    # Never written: shown for a `running` run whose process is gone from this host (kill -9).
    LOST = "lost"


class ArtifactKind(StrEnum):
    DATASET = "dataset"  # ref: a dataset version, "name@v3"
    CHECKPOINT = "checkpoint"  # ref: a path
    RUN = "run"  # ref: a run id (a parent run: --resume, --init-from)
    FILE = "file"  # ref: a path (videos, reports, anything else)


class Artifact(BaseModel):
    """Something a run read or wrote; lineage joins runs through these (by digest first)."""

    model_config = ConfigDict(extra="ignore")

    kind: ArtifactKind
    ref: str
    digest: str | None = None  # "sha256:<hex>"
    size: int | None = None
    role: str | None = None  # why it is there: "policy", "resume", "init", "train-data", ...

    def key(self) -> str:
        """Identity in the lineage graph: the content digest where known, else kind and ref."""
        if self.kind == ArtifactKind.RUN:
            return f"run:{self.ref}"
        return self.digest or f"{self.kind.value}:{self.ref}"


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    id: str
    kind: str  # the producing command: train, collect, finetune-dt, eval, ...
    name: str
    status: RunStatus = RunStatus.RUNNING
    created_at: str  # ISO 8601, UTC
    ended_at: str | None = None
    duration_s: float | None = None
    seed: int | None = None
    host: str = ""
    pid: int = 0
    inputs: list[Artifact] = Field(default_factory=list)
    outputs: list[Artifact] = Field(default_factory=list)
    metrics_last: dict[str, float] = Field(default_factory=dict)
    metrics_rows: int = 0
    error: str | None = None


class CodeVersion(BaseModel):
    flexrl_version: str
    source_dir: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    diff_file: str | None = None  # "code.diff" beside run.json when dirty
    untracked: list[str] = Field(default_factory=list)


class Provenance(BaseModel):
    model_config = ConfigDict(extra="ignore")

    argv: list[str]
    cwd: str
    code: CodeVersion
    python: str
    platform: str
    host: str
    cpu_count: int | None
    packages: dict[str, str]
    env: dict[str, Any] = Field(default_factory=dict)  # FLEXRL_* variables
