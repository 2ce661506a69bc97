"""Runs: every command that produces something records itself under `workspace/runs/<run-id>/`.

    ws = Workspace("workspace")
    with ws.start_run("train", "walk", recipe=recipe, seed=0) as run:
        run.add_input(ArtifactKind.DATASET, "walk@v3", digest=...)
        run.log_metrics(step, {"loss": 0.1})
        run.add_artifact(path_to_checkpoint, ArtifactKind.CHECKPOINT)

Leaving the block records `completed`; an exception `failed` (message and traceback kept); a
Ctrl-C or SIGTERM `interrupted`. Each run directory is claimed with an exclusive mkdir and only
its own process writes in it, always atomically, so any number of processes (or Kubernetes
pods on a shared volume) can record into one workspace at once.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType

from pydantic import BaseModel, ValidationError

from flexrl.config import recipe_to_yaml
from flexrl.errors import FlexrlError
from flexrl.fileio import atomic_write_json, atomic_write_text, sha256_file
from flexrl.workspace.provenance import collect_provenance
from flexrl.workspace.records import Artifact, ArtifactKind, Provenance, RunRecord, RunStatus

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RUN_FILE = "run.json"
PROVENANCE_FILE = "provenance.json"
RECIPE_FILE = "recipe.yaml"
DIFF_FILE = "code.diff"
METRICS_FILE = "metrics.csv"
TRACEBACK_FILE = "traceback.txt"
ARTIFACTS_DIR = "artifacts"
DEFAULT_WORKSPACE = "workspace"
# A running run rewrites run.json at most this often, so `runs ls` shows recent metrics.
SAVE_INTERVAL_S = 30.0


class RunInterrupted(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM (as SIGINT raises
    KeyboardInterrupt), so `finally` blocks run and the run is recorded `interrupted`."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def check_name(name: str, what: str = "run name") -> str:
    if not NAME_RE.fullmatch(name):
        raise FlexrlError(
            f"invalid {what} {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


class Workspace:
    """A directory of runs (and, with the store, datasets)."""

    def __init__(self, root: str | Path = DEFAULT_WORKSPACE):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"

    # -- recording -------------------------------------------------------------------------

    def start_run(
        self,
        kind: str,
        name: str,
        *,
        recipe: BaseModel | None = None,
        seed: int | None = None,
        argv: list[str] | None = None,
        inputs: Iterable[Artifact] = (),
    ) -> Run:
        """Claim a new run directory and record everything known before the work starts."""
        check_name(name)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        created = datetime.now(UTC)
        while True:  # the random suffix makes a clash unlikely; mkdir makes it impossible
            run_id = f"{created:%Y%m%d-%H%M%S}-{name}-{secrets.token_hex(3)}"
            run_dir = self.runs_dir / run_id
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                continue
        try:
            provenance, diff = collect_provenance(argv)
            if diff:
                atomic_write_text(run_dir / DIFF_FILE, diff)
                provenance.code.diff_file = DIFF_FILE
            atomic_write_json(run_dir / PROVENANCE_FILE, provenance.model_dump(mode="json"))
            if recipe is not None:
                atomic_write_text(run_dir / RECIPE_FILE, recipe_to_yaml(recipe))
            record = RunRecord(
                id=run_id,
                kind=kind,
                name=name,
                created_at=created.isoformat(timespec="microseconds"),
                seed=seed,
                host=socket.gethostname(),
                pid=os.getpid(),
                inputs=list(inputs),
            )
            run = Run(self, record, run_dir)
            run.save()  # run.json last: a directory without it is a run still being born
        except BaseException:  # a full disk, say: leave no half-made run behind
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return run

    # -- reading ---------------------------------------------------------------------------

    def list_runs(self) -> list[RunRecord]:
        """All runs, oldest first. Runs whose process vanished show the status `lost`."""
        records = []
        try:
            entries = list(os.scandir(self.runs_dir))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            record = self._read_record(Path(entry.path), skip_damaged=True)
            if record is not None:
                records.append(record)
        records.sort(key=lambda r: r.created_at)
        return records

    def load_run(self, run_id: str) -> RunRecord:
        record = self._read_record(self.runs_dir / run_id) if NAME_RE.fullmatch(run_id) else None
        if record is None:
            raise FlexrlError(f"unknown run: {run_id!r} (see `flexrl runs ls`)")
        return record

    def resolve_run(self, ref: str) -> RunRecord:
        """A run by id, by unique id prefix, or by name (the latest run of that name)."""
        if NAME_RE.fullmatch(ref):
            exact = self._read_record(self.runs_dir / ref)
            if exact is not None:
                return exact
        records = self.list_runs()
        by_prefix = [r for r in records if r.id.startswith(ref)]
        if len(by_prefix) == 1:
            return by_prefix[0]
        if len(by_prefix) > 1:
            ids = ", ".join(r.id for r in by_prefix[:3])
            raise FlexrlError(
                f"run {ref!r} is ambiguous: it matches {len(by_prefix)} runs ({ids}, ...)"
            )
        by_name = [r for r in records if r.name == ref]
        if by_name:
            return by_name[-1]
        raise FlexrlError(f"unknown run: {ref!r} (see `flexrl runs ls`)")

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    # -- files as artifacts ----------------------------------------------------------------

    def relative_ref(self, path: Path) -> str:
        """A path as lineage records it: relative to the workspace root when inside it."""
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path.resolve())

    def file_artifact(
        self, path: str | Path, kind: ArtifactKind = ArtifactKind.FILE, role: str | None = None
    ) -> Artifact:
        """A file as an artifact: its ref, sha256 digest and size."""
        path = Path(path)
        return Artifact(
            kind=kind,
            ref=self.relative_ref(path),
            digest=sha256_file(path),
            size=path.stat().st_size,
            role=role,
        )

    def artifact_path(self, record: RunRecord, artifact: Artifact) -> Path:
        """Where a file a run recorded lies now, refusing one that is gone or was changed
        since it was recorded (its digest no longer matches)."""
        path = Path(artifact.ref)
        if not path.is_absolute():
            path = self.root / path
        if not path.is_file():
            raise FlexrlError(f"run {record.id}: {artifact.kind.value} {artifact.ref} is missing")
        if artifact.digest is not None and sha256_file(path) != artifact.digest:
            raise FlexrlError(
                f"run {record.id}: {artifact.kind.value} {artifact.ref} changed since it was "
                "recorded"
            )
        return path

    def load_provenance(self, run_id: str) -> Provenance | None:
        try:
            return Provenance.model_validate_json(
                (self.run_dir(run_id) / PROVENANCE_FILE).read_bytes()
            )
        except (FileNotFoundError, ValidationError):
            return None

    def _read_record(self, run_dir: Path, *, skip_damaged: bool = False) -> RunRecord | None:
        """The run's record; None where there is none. A damaged run.json is an error, or with
        `skip_damaged` (listings) a warning, so one bad file cannot hide every other run."""
        path = run_dir / RUN_FILE
        try:
            record = RunRecord.model_validate_json(path.read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (ValidationError, OSError) as e:
            why = f"{e.error_count()} errors" if isinstance(e, ValidationError) else e.strerror
            message = f"{path}: not a valid run record ({why})"
            if not skip_damaged:
                raise FlexrlError(f"{message}; repair it or move its run directory away") from None
            if path not in _warned:
                _warned.add(path)
                sys.stderr.write(f"warning: skipping {message}\n")
            return None
        if record.status == RunStatus.RUNNING and _process_gone(record.host, record.pid):
            record.status = RunStatus.LOST
        return record


def _step_of(row: dict[str, str]) -> int | None:
    try:
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        return None


_warned: set[Path] = set()  # damaged records already reported by this process


def _process_gone(host: str, pid: int) -> bool:
    """True only when we can tell: the run's host is this host and its pid no longer exists."""
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Run:
    """A run being recorded. Use as a context manager to record how it ended."""

    def __init__(self, workspace: Workspace, record: RunRecord, run_dir: Path):
        self.workspace = workspace
        self.record = record
        self.dir = run_dir
        self._t0 = time.monotonic()
        self._last_save = 0.0
        self._metric_columns: list[str] = []
        self._time_offset = 0.0  # seconds the parent of a resumed run had run
        self._metrics_file: io.TextIOWrapper | None = None
        self._previous_sigterm: signal.Handlers | None = None
        self._signalled = False

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def artifacts_dir(self) -> Path:
        path = self.dir / ARTIFACTS_DIR
        path.mkdir(exist_ok=True)
        return path

    def save(self) -> None:
        atomic_write_json(self.dir / RUN_FILE, self.record.model_dump(mode="json"))
        self._last_save = time.monotonic()

    # -- lineage ---------------------------------------------------------------------------

    def add_input(self, artifact: Artifact) -> Artifact:
        self.record.inputs.append(artifact)
        self.save()
        return artifact

    def add_output(self, artifact: Artifact) -> Artifact:
        self.record.outputs.append(artifact)
        self.save()
        return artifact

    def add_artifact(
        self, path: str | Path, kind: ArtifactKind = ArtifactKind.FILE, role: str | None = None
    ) -> Artifact:
        """Record a file this run wrote (a checkpoint, a video) with its sha256 digest.

        A file written again (a `last.pt` refreshed every N updates) replaces its own entry:
        the record describes what is on disk now.
        """
        artifact = self.workspace.file_artifact(path, kind, role)
        self.record.outputs = [a for a in self.record.outputs if a.ref != artifact.ref]
        return self.add_output(artifact)

    # -- metrics ---------------------------------------------------------------------------

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append one row to metrics.csv (columns: step, time_s, then metric names)."""
        values = {k: float(v) for k, v in metrics.items()}
        new = [k for k in values if k not in self._metric_columns]
        if new or self._metrics_file is None:
            self._metric_columns += new
            self._rewrite_metrics_header()
        assert self._metrics_file is not None
        row = [str(step), f"{time.monotonic() - self._t0 + self._time_offset:.3f}"]
        row += [repr(values[k]) if k in values else "" for k in self._metric_columns]
        self._metrics_file.write(",".join(row) + "\n")
        self._metrics_file.flush()
        self.record.metrics_last.update(values)
        self.record.metrics_rows += 1
        if time.monotonic() - self._last_save > SAVE_INTERVAL_S:
            self.save()

    def continue_metrics(self, parent: RunRecord, up_to_step: int) -> None:
        """Start metrics.csv with `parent`'s rows up to `up_to_step`, where this run takes over
        from it (--resume), so the run that continues another holds one whole history."""
        source = self.workspace.run_dir(parent.id) / METRICS_FILE
        if self._metrics_file is not None or not source.is_file():
            return
        with open(source, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if _step_of(r) is not None and _step_of(r) <= up_to_step]
            columns = [c for c in reader.fieldnames or () if c not in ("step", "time_s")]
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=["step", "time_s", *columns], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.dir / METRICS_FILE, buffer.getvalue())
        self._metric_columns = columns
        self._rewrite_metrics_header()
        if rows:  # times go on from the parent's, as if the run had never stopped
            self._time_offset = float(rows[-1].get("time_s") or 0.0)
        for row in rows:
            self.record.metrics_last.update({k: float(row[k]) for k in columns if row.get(k)})
        self.record.metrics_rows = len(rows)
        self.save()

    def _rewrite_metrics_header(self) -> None:
        """(Re)write metrics.csv with the current columns, keeping the rows logged so far."""
        path = self.dir / METRICS_FILE
        if self._metrics_file is not None:
            self._metrics_file.close()
        rows: list[dict[str, str]] = []
        if path.exists():
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        columns = ["step", "time_s", *self._metric_columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, buffer.getvalue())
        self._metrics_file = open(path, "a", encoding="utf-8")  # noqa: SIM115  closed in finish

    # -- ending ----------------------------------------------------------------------------

    def finish(self, status: RunStatus, error: str | None = None) -> None:
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        self.record.status = status
        self.record.error = error
        self.record.ended_at = utc_now()
        self.record.duration_s = round(time.monotonic() - self._t0, 3)
        self.save()

    def __enter__(self) -> Run:
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self._signalled:  # a second SIGTERM must not break the final write
            return
        self._signalled = True
        raise RunInterrupted(signum)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
                self.finish(RunStatus.COMPLETED)  # if this write fails, the run reads as lost
            elif isinstance(exc, KeyboardInterrupt):
                self.finish(RunStatus.INTERRUPTED, str(exc) or "interrupted by SIGINT")
            else:
                if not isinstance(exc, FlexrlError):
                    text = "".join(traceback.format_exception(exc_type, exc, tb))
                    atomic_write_text(self.dir / TRACEBACK_FILE, text)
                self.finish(RunStatus.FAILED, _describe(exc))
        except OSError:
            # Recording how it ended failed too (the disk is full): the run.json on disk still
            # says running (shown as lost), never completed; the first error is the one to show.
            if exc is None:
                raise
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FlexrlError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
