"""What `workspace/sweeps/<id>/` holds, and the only code that reads or writes it.

    workspace/sweeps/<sweep-id>/
        sweep.json              SweepRecord: id, spec path and hash, backend, limits, Jobs
        spec.yaml               the spec exactly as submitted
        recipe.yaml             the base recipe exactly as submitted (trials run --config on it)
        manifests/<job>.yaml    Kubernetes backend: every Job submitted (or printed by --dry-run)
        trials/<index>/
            trial.json          TrialDef: parameters, seed, run name, the flexrl command (immutable)
            recipe.yaml         the trial's fully resolved recipe (recipe commands)
            state.json          TrialState: state, attempts, metric; written by run-trial only
            attempt-<n>.log     output of the flexrl command of attempt n
            run-trial.log       local backend: run-trial's own output, all attempts

Every file is written atomically (temporary name, then rename), so a reader on the shared
volume (status from a laptop while pods run) never sees a torn record. state.json of a trial
is written by one process at a time: the local pool runs an index once at a time, and a
Kubernetes Indexed Job with podReplacementPolicy=Failed starts a replacement pod only after
the previous one has terminated.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flexrl.errors import FlexrlError
from flexrl.fileio import atomic_write_json, atomic_write_text
from flexrl.orchestrate.spec import LoadedSpec, Metric, Trial, recipe_overrides, resolve_recipe
from flexrl.workspace.runs import NAME_RE

SCHEMA_VERSION = 1
SWEEPS_DIR = "sweeps"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class TrialStateName(StrEnum):
    PENDING = "pending"  # no attempt yet (or never started before a cancel)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # Ctrl-C, cancel, preemption: resumable


TERMINAL = {TrialStateName.SUCCEEDED, TrialStateName.FAILED, TrialStateName.INTERRUPTED}


class KubernetesInfo(BaseModel):
    namespace: str
    jobs: list[str] = Field(default_factory=list)  # one per submit/resume, newest last
    server_version: str | None = None
    per_index_backoff: bool = True


class SweepRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    id: str
    name: str
    created_at: str
    spec_path: str
    spec_hash: str
    backend: str
    command: str
    num_trials: int
    metric: Metric
    parallelism: int
    retries: int
    max_failed_trials: int | None
    host: str = ""
    pid: int = 0  # the local coordinator (submit/resume), so `cancel` can signal it
    kubernetes: KubernetesInfo | None = None
    cancelled_at: str | None = None


class TrialDef(BaseModel):
    """A trial as submitted: what run-trial executes. Never changes after submission."""

    index: int
    config: int
    params: dict[str, Any]
    seed: int
    run_name: str
    command: str
    args: list[str]  # flexrl arguments, without --workspace/--name/--resume (run-trial adds them)


class Attempt(BaseModel):
    n: int
    started_at: str
    ended_at: str | None = None
    exit_code: int | None = None
    host: str = ""
    run_id: str | None = None
    resumed_from: str | None = None  # the earlier run whose checkpoint this attempt continued
    log: str


class TrialState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    index: int
    state: TrialStateName = TrialStateName.PENDING
    attempts: list[Attempt] = Field(default_factory=list)
    run_id: str | None = None
    metric: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    updated_at: str | None = None


class SweepStore:
    """The sweeps of one workspace."""

    def __init__(self, workspace: str | Path):
        self.workspace = Path(workspace)
        self.root = self.workspace / SWEEPS_DIR

    def dir(self, sweep_id: str) -> Path:
        return self.root / sweep_id

    def trial_dir(self, sweep_id: str, index: int) -> Path:
        return self.dir(sweep_id) / "trials" / str(index)

    # -- creating --------------------------------------------------------------------------

    def create(self, loaded: LoadedSpec, backend: str) -> SweepRecord:
        """Claim `sweeps/<name>-<hex>/` and write the spec, base recipe and every trial."""
        spec = loaded.spec
        self.root.mkdir(parents=True, exist_ok=True)
        while True:  # an exclusive mkdir: two submissions can never share an id
            sweep_id = f"{spec.name}-{secrets.token_hex(3)}"
            try:
                self.dir(sweep_id).mkdir()
                break
            except FileExistsError:
                continue
        d = self.dir(sweep_id)
        atomic_write_text(d / "spec.yaml", loaded.raw_text)
        if loaded.recipe_text is not None:
            atomic_write_text(d / "recipe.yaml", loaded.recipe_text)
        for trial in loaded.trials:
            self._write_trial(sweep_id, loaded, trial)
        record = SweepRecord(
            id=sweep_id,
            name=spec.name,
            created_at=utc_now(),
            spec_path=str(loaded.path),
            spec_hash=loaded.hash,
            backend=backend,
            command=spec.command,
            num_trials=len(loaded.trials),
            metric=spec.metric,
            parallelism=spec.parallelism,
            retries=spec.retries,
            max_failed_trials=spec.max_failed_trials,
            host=socket.gethostname(),
            pid=os.getpid(),
        )
        self.save(record)  # sweep.json last: a directory without it is still being born
        return record

    def _write_trial(self, sweep_id: str, loaded: LoadedSpec, trial: Trial) -> None:
        spec = loaded.spec
        d = self.trial_dir(sweep_id, trial.index)
        d.mkdir(parents=True)
        args = trial_command(loaded, trial, f"{SWEEPS_DIR}/{sweep_id}/recipe.yaml")
        tdef = TrialDef(
            index=trial.index,
            config=trial.config,
            params=trial.params,
            seed=trial.seed,
            run_name=f"{sweep_id}-t{trial.index}",
            command=spec.command,
            args=args,
        )
        atomic_write_json(d / "trial.json", tdef.model_dump(mode="json"))
        if loaded.recipe_text is not None:
            import yaml

            resolved = resolve_recipe(spec, loaded.recipe_text, trial, source="trial")
            atomic_write_text(d / "recipe.yaml", yaml.safe_dump(resolved, sort_keys=False))

    # -- reading and writing ---------------------------------------------------------------

    def save(self, record: SweepRecord) -> None:
        atomic_write_json(self.dir(record.id) / "sweep.json", record.model_dump(mode="json"))

    def load(self, sweep_id: str) -> SweepRecord:
        path = self.dir(sweep_id) / "sweep.json" if NAME_RE.fullmatch(sweep_id) else None
        if path is None or not path.is_file():
            known = self.list_ids()
            matches = (
                [k for k in known if k.startswith(sweep_id)] if NAME_RE.fullmatch(sweep_id) else []
            )
            if len(matches) == 1:
                return self.load(matches[0])
            hint = f" (known: {', '.join(known[-3:])})" if known else ""
            raise FlexrlError(f"unknown sweep: {sweep_id!r}{hint}")
        try:
            return SweepRecord.model_validate_json(path.read_bytes())
        except ValidationError as e:
            raise FlexrlError(
                f"{path}: not a valid sweep record ({e.error_count()} errors)"
            ) from None

    def list_ids(self) -> list[str]:
        try:
            return sorted(p.name for p in self.root.iterdir() if (p / "sweep.json").is_file())
        except FileNotFoundError:
            return []

    def load_trial(self, sweep_id: str, index: int) -> TrialDef:
        path = self.trial_dir(sweep_id, index) / "trial.json"
        if not path.is_file():
            record = self.load(sweep_id)
            raise FlexrlError(
                f"sweep {sweep_id} has no trial {index} (trials 0-{record.num_trials - 1})"
            )
        return TrialDef.model_validate_json(path.read_bytes())

    def load_state(self, sweep_id: str, index: int) -> TrialState:
        path = self.trial_dir(sweep_id, index) / "state.json"
        try:
            return TrialState.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return TrialState(index=index)

    def save_state(self, sweep_id: str, state: TrialState) -> None:
        state.updated_at = utc_now()
        path = self.trial_dir(sweep_id, state.index) / "state.json"
        atomic_write_json(path, state.model_dump(mode="json"))

    def states(self, record: SweepRecord) -> list[TrialState]:
        return [self.load_state(record.id, i) for i in range(record.num_trials)]

    def trials(self, record: SweepRecord) -> list[TrialDef]:
        return [self.load_trial(record.id, i) for i in range(record.num_trials)]


def trial_command(loaded: LoadedSpec, trial: Trial, recipe_ref: str) -> list[str]:
    """The flexrl arguments of a trial. The recipe path is relative to the workspace, so the
    same arguments work on a laptop and in a pod that mounts the workspace elsewhere."""
    spec = loaded.spec
    args: list[str] = spec.command.split()
    if spec.command in ("train", "finetune bc", "finetune dt"):
        args += ["--config", "{workspace}/" + recipe_ref]
    from flexrl.orchestrate.spec import command_args

    for key, value in command_args(spec, trial).items():
        option = "--" + key.replace("_", "-")
        if value is True:
            args.append(option)
        elif value is not False:
            args += [option, str(value)]
    if spec.command in ("train", "collect", "eval"):
        args += ["--seed", str(trial.seed)]
    else:  # finetune takes its seed from the recipe
        args += ["--set", f"seed={trial.seed}"]
    for override in recipe_overrides(spec, trial):
        args += ["--set", override]
    return args
