"""`flexrl sweep submit | status | results | logs | cancel | resume | run-trial`."""

from __future__ import annotations

import os
import signal
import socket
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flexrl.cli.common import DEFAULT_WORKSPACE, JsonOption, WorkspaceOption, console, print_json
from flexrl.errors import FlexrlError
from flexrl.orchestrate import k8s
from flexrl.orchestrate.kube import KubeClient
from flexrl.orchestrate.local import LocalOutcome, remaining, run_local
from flexrl.orchestrate.records import (
    KubernetesInfo,
    SweepRecord,
    SweepStore,
    utc_now,
)
from flexrl.orchestrate.results import (
    EVAL_RETURN,
    TRAINING_RETURN,
    counts,
    format_params,
    rank,
    rank_configs,
    trial_values,
)
from flexrl.orchestrate.spec import LoadedSpec, load_spec
from flexrl.orchestrate.trial import run_trial, trial_index

app = typer.Typer(
    help="Hyperparameter sweeps: trials as local processes or a Kubernetes Indexed Job.",
    no_args_is_help=True,
)

STATE_STYLE = {
    "pending": "dim",
    "not run": "dim",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "interrupted": "yellow",
}


class Backend(StrEnum):
    LOCAL = "local"
    K8S = "k8s"


SweepId = Annotated[str, typer.Argument(help="Sweep id (or a unique prefix).")]


@app.command("submit")
def submit(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec YAML.")],
    backend: Annotated[Backend, typer.Option(help="Where trials run.")] = Backend.LOCAL,
    dry_run: Annotated[
        bool,
        typer.Option(help="Print the trials (local) or the Job manifest (k8s); record nothing."),
    ] = False,
    image: Annotated[
        str | None, typer.Option(help="k8s: container image (default: the spec's).")
    ] = None,
    server_version: Annotated[
        str | None,
        typer.Option(help="k8s --dry-run: write the Job for this server version (e.g. 1.32)."),
    ] = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Record a sweep under workspace/sweeps/<id>/ and run its trials."""
    submit_loaded(load_spec(spec_path), backend, dry_run, image, server_version, workspace)


def submit_loaded(
    loaded: LoadedSpec,
    backend: Backend,
    dry_run: bool,
    image: str | None,
    server_version: str | None,
    workspace: Path,
) -> None:
    """Submit a validated spec (from a file, or built by `collect --pods`)."""
    if dry_run:
        _dry_run(loaded, backend, image, server_version)
        return
    store = SweepStore(workspace)
    if backend == Backend.LOCAL:
        record = store.create(loaded, backend.value)
        console.print(
            f"sweep [bold]{record.id}[/bold]: {record.num_trials} trials, "
            f"{record.parallelism} at a time, in {store.dir(record.id)}"
        )
        _run_local_or_exit(store, record, list(range(record.num_trials)))
        return
    client = KubeClient()  # before recording anything: no cluster, no sweep
    version = client.server_version()
    record = store.create(loaded, backend.value)
    _submit_job(store, record, loaded, client, version, image, attempt=0)


def _dry_run(
    loaded: LoadedSpec, backend: Backend, image: str | None, server_version: str | None
) -> None:
    spec = loaded.spec
    if backend == Backend.K8S:
        version = k8s.LATEST
        if server_version:
            major, _, minor = server_version.partition(".")
            version = k8s.ServerVersion.parse(major, minor or "0")
        record = _preview_record(loaded)
        manifest = k8s.build_job(record, spec, k8s.job_name(record.id), version, image)
        note = k8s.fallback_note(version, spec, record.num_trials)
        if note:
            sys.stderr.write(f"note: {note}\n")
        sys.stdout.write(k8s.to_yaml(manifest))
        return
    table = Table(box=None, header_style="bold", title=f"{spec.name}: {len(loaded.trials)} trials")
    for column in ("trial", "seed", "parameters"):
        table.add_column(column)
    for t in loaded.trials:
        table.add_row(str(t.index), str(t.seed), format_params(t.params))
    console.print(table)


def _preview_record(loaded: LoadedSpec) -> SweepRecord:
    spec = loaded.spec
    return SweepRecord(
        id=f"{spec.name}-dryrun",
        name=spec.name,
        created_at=utc_now(),
        spec_path=str(loaded.path),
        spec_hash=loaded.hash,
        backend="k8s",
        command=spec.command,
        num_trials=len(loaded.trials),
        metric=spec.metric,
        parallelism=spec.parallelism,
        retries=spec.retries,
        max_failed_trials=spec.max_failed_trials,
    )


def _submit_job(
    store: SweepStore,
    record: SweepRecord,
    loaded: LoadedSpec,
    client: KubeClient,
    version: k8s.ServerVersion,
    image: str | None,
    attempt: int,
) -> None:
    from flexrl.fileio import atomic_write_text

    spec = loaded.spec
    name = k8s.job_name(record.id, attempt)
    manifest = k8s.build_job(record, spec, name, version, image)
    manifests = store.dir(record.id) / "manifests"
    manifests.mkdir(exist_ok=True)
    atomic_write_text(manifests / f"{name}.yaml", k8s.to_yaml(manifest))
    info = record.kubernetes or KubernetesInfo(namespace=spec.kubernetes.namespace)
    info.server_version = str(version)
    info.per_index_backoff = version.per_index_backoff
    note = k8s.fallback_note(version, spec, record.num_trials)
    if note:
        sys.stderr.write(f"note: {note}\n")
    client.create_job(manifest)
    info.jobs.append(name)
    record.kubernetes = info
    store.save(record)
    console.print(
        f"sweep [bold]{record.id}[/bold]: Job {info.namespace}/{name} with "
        f"{record.num_trials} indexes on Kubernetes {version}; "
        f"follow with `flexrl sweep status {record.id}`"
    )


def _run_local_or_exit(store: SweepStore, record: SweepRecord, indexes: list[int]) -> None:
    """Run the pool in the foreground; exit 1 when a trial failed, 128+N when interrupted."""
    record.host, record.pid = socket.gethostname(), os.getpid()
    store.save(record)
    try:
        outcome = run_local(store, record, indexes, notify=lambda line: console.print(line))
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        sys.stderr.write(
            f"error: sweep {record.id} interrupted; its running trials are recorded "
            f"interrupted (continue with `flexrl sweep resume {record.id}`)\n"
        )
        raise typer.Exit(128 + int(signum)) from None
    _print_results(store, record)
    _exit_for(outcome)


def _exit_for(outcome: LocalOutcome) -> None:
    if outcome.failed or outcome.interrupted or outcome.not_started:
        raise typer.Exit(1)


@app.command("status")
def status(
    sweep_id: SweepId, json: JsonOption = False, workspace: WorkspaceOption = DEFAULT_WORKSPACE
) -> None:
    """Every trial: parameters, state, attempts, metric (joined with the Job on k8s)."""
    store = SweepStore(workspace)
    record = store.load(sweep_id)
    trials, states = store.trials(record), store.states(record)
    views = [
        k8s.TrialView(s.index, s.state.value, len(s.attempts), s.metric, s.error) for s in states
    ]
    job_line = None
    if record.kubernetes is not None:
        try:
            client = KubeClient()
            jobs = [
                k8s.JobView.from_job(j) for j in client.jobs(record.kubernetes.namespace, record.id)
            ]
            pods = [
                k8s.PodView.from_pod(p) for p in client.pods(record.kubernetes.namespace, record.id)
            ]
            views = k8s.merge(states, jobs, pods)
            if jobs:
                j = jobs[-1]
                job_line = (
                    f"Job {j.name}: {j.terminal or 'not finished'}"
                    + (f" ({j.reason})" if j.reason else "")
                    + f"; active {j.active}, succeeded {j.succeeded}, failed pods {j.failed}"
                )
            else:
                job_line = "no Job found (deleted, or removed by ttlSecondsAfterFinished)"
        except FlexrlError as e:
            sys.stderr.write(f"note: showing the trial records only: {e}\n")
    if json:
        print_json(
            {
                "sweep": record.model_dump(mode="json"),
                "job": job_line,
                "counts": counts([v.state for v in views]),
                "trials": [
                    {
                        "index": v.index,
                        "params": t.params,
                        "seed": t.seed,
                        "state": v.state,
                        "attempts": v.attempts,
                        "metric": v.metric,
                        "run_id": s.run_id,
                        "detail": v.detail,
                    }
                    for t, s, v in zip(trials, states, views, strict=True)
                ],
            }
        )
        return
    summary = ", ".join(f"{n} {s}" for s, n in counts([v.state for v in views]).items())
    console.print(f"sweep [bold]{record.id}[/bold] ({record.backend}, {record.command}): {summary}")
    if job_line:
        console.print(job_line)
    table = Table(box=None, header_style="bold")
    for column in ("trial", "parameters", "seed", "state", "attempts", record.metric.name):
        table.add_column(column)
    table.add_column("detail", overflow="fold")
    for t, v in zip(trials, views, strict=True):
        style = STATE_STYLE.get(v.state, "")
        table.add_row(
            str(v.index),
            format_params(t.params),
            str(t.seed),
            f"[{style}]{v.state}[/]" if style else v.state,
            str(v.attempts),
            "-" if v.metric is None else f"{v.metric:.4g}",
            v.detail or "",
        )
    console.print(table)


@app.command("results")
def results(
    sweep_id: SweepId, json: JsonOption = False, workspace: WorkspaceOption = DEFAULT_WORKSPACE
) -> None:
    """Configurations ranked by the IQM of the metric over their seeds, best first; an
    evaluation (`flexrl eval` of every trial's run) is preferred to the last training return."""
    store = SweepStore(workspace)
    record = store.load(sweep_id)
    if not json:
        _print_results(store, record)
        return
    metric, ranked, configs = _ranked(store, record)
    print_json(
        {
            "sweep": record.id,
            "metric": record.metric.model_dump(),
            "value": metric,  # the metric ranked: the sweep's, or eval_return (see --help)
            "ranked_by": "iqm",
            "configs": [c.to_json() for c in configs],
            "trials": [r.__dict__ for r in ranked],
        }
    )


def _ranked(store: SweepStore, record: SweepRecord):
    states = store.states(record)
    metric, values = trial_values(record, states, store.workspace)
    ranked = rank(record, store.trials(record), states, values)
    return metric, ranked, rank_configs(record, ranked)


def _print_results(store: SweepStore, record: SweepRecord) -> None:
    metric, _, configs = _ranked(store, record)
    if not configs:
        console.print(f"sweep {record.id}: no succeeded trial with {record.metric.name!r} yet")
        return
    table = Table(
        box=None,
        header_style="bold",
        title=f"{record.id}: {metric} ({record.metric.goal}), per configuration over its seeds",
    )
    for column in ("rank", "parameters", "seeds", "IQM", "mean ± std", "per seed", "trials", ""):
        table.add_column(column)
    for c in configs:
        std = "" if c.std is None else f" ± {c.std:.4g}"
        table.add_row(
            str(c.rank),
            format_params(c.params),
            str(len(c.trials)),
            f"{c.iqm:.4g}",
            f"{c.mean:.4g}{std}",
            ", ".join(f"{t.metric:.4g} (s{t.seed})" for t in c.trials),
            ", ".join(str(t.index) for t in c.trials),
            "[bold green]best[/]" if c.best else "",
        )
    console.print(table)
    few = min(len(c.trials) for c in configs) < 4
    console.print(
        "ranked by IQM (interquartile mean over seeds)"
        + ("; with fewer than 4 seeds it trims nothing: IQM = mean" if few else "")
    )
    if metric == EVAL_RETURN and record.metric.name != EVAL_RETURN:
        console.print(
            f"values: {EVAL_RETURN} of the trials' `flexrl eval` runs, not {record.metric.name}"
        )
    elif record.metric.name == TRAINING_RETURN:
        console.print(
            f"values: {TRAINING_RETURN}, the last training return; `flexrl eval RUN` every "
            "trial's run to rank by evaluation"
        )


@app.command("logs")
def logs(
    sweep_id: SweepId,
    trial: Annotated[int | None, typer.Option(help="Only this trial (default: all).")] = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Output of the trials: from the pods on Kubernetes, else from the attempt logs."""
    store = SweepStore(workspace)
    record = store.load(sweep_id)
    indexes = [trial] if trial is not None else list(range(record.num_trials))
    if trial is not None:
        store.load_trial(record.id, trial)  # an unknown index is an error, not silence
    if record.kubernetes is not None:
        try:
            client = KubeClient()
            pods = client.pods(record.kubernetes.namespace, record.id)
            shown = False
            for pod in pods:
                view = k8s.PodView.from_pod(pod)
                if view.index in indexes:
                    sys.stdout.write(
                        f"==> trial {view.index}, pod {view.name} ({view.phase}) <==\n"
                    )
                    sys.stdout.write(client.pod_log(record.kubernetes.namespace, view.name))
                    shown = True
            if shown:
                return
            sys.stderr.write("note: no pods left (finished Jobs are removed); attempt logs:\n")
        except FlexrlError as e:
            sys.stderr.write(f"note: {e}; showing the attempt logs on the workspace\n")
    for index in indexes:
        state = store.load_state(record.id, index)
        for attempt in state.attempts:
            path = store.trial_dir(record.id, index) / attempt.log
            sys.stdout.write(
                f"==> trial {index}, attempt {attempt.n} (exit {attempt.exit_code}) <==\n"
            )
            if path.is_file():
                sys.stdout.write(path.read_text(encoding="utf-8", errors="replace"))


@app.command("cancel")
def cancel(sweep_id: SweepId, workspace: WorkspaceOption = DEFAULT_WORKSPACE) -> None:
    """Stop a sweep: its trials are recorded interrupted; `resume` continues it."""
    store = SweepStore(workspace)
    record = store.load(sweep_id)
    if record.kubernetes is not None:
        client = KubeClient()
        for name in record.kubernetes.jobs:
            client.delete_job(record.kubernetes.namespace, name)
        message = f"deleted Job(s) {', '.join(record.kubernetes.jobs)}"
    else:
        if record.host != socket.gethostname():
            raise FlexrlError(f"sweep {record.id} runs on host {record.host}: cancel it there")
        try:
            os.kill(record.pid, signal.SIGTERM)  # the coordinator stops its trials in order
            message = f"sent SIGTERM to the coordinator (pid {record.pid})"
        except ProcessLookupError:
            message = "its coordinator is not running"
    record.cancelled_at = utc_now()
    store.save(record)
    console.print(f"sweep {record.id}: {message}")


@app.command("resume")
def resume(
    sweep_id: SweepId,
    image: Annotated[str | None, typer.Option(help="k8s: container image.")] = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Run again only the trials that failed, were interrupted or never ran."""
    store = SweepStore(workspace)
    record = store.load(sweep_id)
    try:
        loaded = load_spec(record.spec_path)
    except FlexrlError as e:
        raise FlexrlError(f"sweep {record.id}: cannot re-read its spec: {e}") from None
    if loaded.hash != record.spec_hash:
        raise FlexrlError(
            f"sweep {record.id}: {record.spec_path} (or its recipe) changed since submission; "
            "submit it as a new sweep"
        )
    todo = remaining(store, record)
    if not todo:
        console.print(f"sweep {record.id}: every trial succeeded; nothing to resume")
        return
    record.cancelled_at = None
    console.print(f"sweep {record.id}: resuming trials {', '.join(map(str, todo))}")
    if record.kubernetes is None:
        _run_local_or_exit(store, record, todo)
        return
    client = KubeClient()
    for job in client.jobs(record.kubernetes.namespace, record.id):
        if k8s.JobView.from_job(job).terminal is None:
            raise FlexrlError(f"sweep {record.id}: Job {job.metadata.name} is still running")
    # A new Job over every index: run-trial returns at once for the ones that succeeded.
    _submit_job(
        store, record, loaded, client, client.server_version(), image, len(record.kubernetes.jobs)
    )


@app.command("run-trial")
def run_trial_command(
    sweep_id: SweepId,
    index: Annotated[
        int | None, typer.Option(help="Trial index (default: $JOB_COMPLETION_INDEX).")
    ] = None,
    quiet: Annotated[
        bool, typer.Option(help="Write the command's output only to the attempt log.")
    ] = False,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
) -> None:
    """Run one trial (what each local process and each Kubernetes pod executes)."""
    code = run_trial(workspace, sweep_id, trial_index(index), echo=None if quiet else sys.stdout)
    if code:
        raise typer.Exit(code)
