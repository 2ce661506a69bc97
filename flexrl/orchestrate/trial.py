"""`flexrl sweep run-trial ID --index i`: the one code path every backend executes per trial.

A local pool process and a Kubernetes pod both run exactly this: read the trial's definition
from `workspace/sweeps/<id>/trials/<i>/`, run the flexrl command in a subprocess with its
`--set` overrides and a deterministic run name (`<sweep-id>-t<i>`), tee its output into
`attempt-<n>.log`, record the attempt, state and metric atomically, and exit with the
command's exit status: 0 succeeded, 2 bad input (never retried by either backend), anything
else retried by the backend while the trial has retries left.

Preemption: when an earlier attempt of a training trial left a run with a checkpoint (a pod
evicted, a node drained, a Ctrl-C), the next attempt passes `--resume <that run>` so training
continues from its last checkpoint instead of starting over. An earlier attempt whose run
completed (the pod died after the command finished) is adopted, not run again.

Test hook, documented because it changes behaviour: FLEXRL_SWEEP_FAIL_ONCE="3,5" makes the
first attempt of trials 3 and 5 exit 1 before running anything, as a crash would. The tests
use it to show a retry; nothing else sets it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import TextIO

from flexrl.errors import FlexrlError
from flexrl.orchestrate.records import (
    Attempt,
    SweepStore,
    TrialDef,
    TrialState,
    TrialStateName,
    utc_now,
)
from flexrl.workspace import ArtifactKind, RunRecord, RunStatus, Workspace

FAIL_ONCE_ENV = "FLEXRL_SWEEP_FAIL_ONCE"
INTERRUPTED_CODES = {130, 143}  # 128 + SIGINT, 128 + SIGTERM


def trial_index(index: int | None) -> int:
    """--index, or JOB_COMPLETION_INDEX as Kubernetes sets it in an Indexed Job's pods."""
    if index is not None:
        return index
    text = os.environ.get("JOB_COMPLETION_INDEX")
    if text is None:
        raise FlexrlError("run-trial needs --index or JOB_COMPLETION_INDEX")
    try:
        return int(text)
    except ValueError:
        raise FlexrlError(f"JOB_COMPLETION_INDEX={text!r} is not an integer") from None


def run_trial(workspace: Path, sweep_id: str, index: int, *, echo: TextIO | None) -> int:
    """Run one attempt of one trial; return the exit status for the process to exit with."""
    store = SweepStore(workspace)
    record = store.load(sweep_id)
    tdef = store.load_trial(record.id, index)
    state = store.load_state(record.id, index)
    out = _Out(echo)
    if state.state == TrialStateName.SUCCEEDED:
        # A resumed Kubernetes Job runs every index again; done ones return at once.
        out.line(f"trial {index} already succeeded (run {state.run_id})")
        return 0
    ws = Workspace(workspace)
    earlier = [r for r in ws.list_runs() if r.name == tdef.run_name]
    previous = earlier[-1] if earlier else None
    n = len(state.attempts) + 1
    log_name = f"attempt-{n}.log"
    attempt = Attempt(n=n, started_at=utc_now(), host=socket.gethostname(), log=log_name)
    state.attempts.append(attempt)

    if previous is not None and previous.status == RunStatus.COMPLETED:
        out.line(f"trial {index}: run {previous.id} already completed; recording it")
        attempt.run_id = previous.id
        return _finish(store, record.id, record.metric.name, state, attempt, 0, previous)

    args = [a.replace("{workspace}", str(workspace)) for a in tdef.args]
    if tdef.command in ("train", "finetune bc", "finetune dt"):
        args += ["--name", tdef.run_name]
    if _resumable(tdef, previous):
        assert previous is not None
        args += ["--resume", previous.id]
        attempt.resumed_from = previous.id
    args += ["--workspace", str(workspace)]

    state.state = TrialStateName.RUNNING
    state.error = None
    store.save_state(record.id, state)
    log_path = store.trial_dir(record.id, index) / log_name
    if _fault_injected(index, n):
        with open(log_path, "w", encoding="utf-8") as log:
            out.attach(log)
            out.line(f"trial {index} attempt {n}: failing on purpose ({FAIL_ONCE_ENV})")
        return _finish(store, record.id, record.metric.name, state, attempt, 1, None)

    argv = [sys.executable, "-m", "flexrl", *args]
    with open(log_path, "w", encoding="utf-8") as log:
        out.attach(log)
        out.line(f"trial {index} attempt {n}: flexrl {' '.join(args)}")
        code, signum, pid = _run_forwarding_signals(argv, out)
    run = _run_of(ws, pid, attempt.host)
    attempt.run_id = run.id if run else None
    if code != 0 and (signum or code in INTERRUPTED_CODES):
        state.state = TrialStateName.INTERRUPTED
        # Exit as the signal we got says (143 for the kubelet's SIGTERM), whatever the
        # command chose, so the backend sees an interruption, not a failure of the trial.
        code = 128 + signum if signum else code
    return _finish(store, record.id, record.metric.name, state, attempt, code, run)


def _resumable(tdef: TrialDef, previous: RunRecord | None) -> bool:
    """Only training resumes, and only from a run that left a checkpoint."""
    return (
        tdef.command == "train"
        and previous is not None
        and any(a.kind == ArtifactKind.CHECKPOINT for a in previous.outputs)
    )


def _fault_injected(index: int, attempt: int) -> bool:
    wanted = {s.strip() for s in os.environ.get(FAIL_ONCE_ENV, "").split(",") if s.strip()}
    return attempt == 1 and str(index) in wanted


def _run_forwarding_signals(argv: list[str], out: _Out) -> tuple[int, int, int]:
    """Run the command, teeing its output; SIGTERM/SIGINT to us are passed on to it, so the
    command records itself interrupted (and writes a checkpoint) before we record the trial.

    Returns (exit status, the signal we received or 0, the command's pid)."""
    received = 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        errors="replace",
    )

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        received = signum
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code < 0:  # killed by a signal: report it the way a shell does
        code = 128 - code
    return code, received, proc.pid


def _run_of(ws: Workspace, pid: int, host: str) -> RunRecord | None:
    """The run the command recorded: the newest one made by that process on this host."""
    mine = [r for r in ws.list_runs() if r.pid == pid and r.host == host]
    return mine[-1] if mine else None


def _finish(
    store: SweepStore,
    sweep_id: str,
    metric_name: str,
    state: TrialState,
    attempt: Attempt,
    code: int,
    run: RunRecord | None,
) -> int:
    attempt.ended_at = utc_now()
    attempt.exit_code = code
    if run is not None:
        state.run_id = run.id
        state.metrics = dict(run.metrics_last)
    if code == 0:
        state.state = TrialStateName.SUCCEEDED
        state.metric = state.metrics.get(metric_name)
        state.error = (
            None if state.metric is not None else f"metric {metric_name!r} was not recorded"
        )
    elif state.state != TrialStateName.INTERRUPTED:
        state.state = TrialStateName.FAILED
        reason = run.error if run is not None and run.error else f"exit status {code}"
        state.error = ("bad input, not retried: " if code == 2 else "") + reason
    else:
        state.error = f"interrupted (exit status {code})"
    store.save_state(sweep_id, state)
    return code


class _Out:
    """Writes to the attempt log and, unless quiet, to stdout (pod logs on Kubernetes)."""

    def __init__(self, echo: TextIO | None):
        self.echo = echo
        self.log: TextIO | None = None

    def attach(self, log: TextIO) -> None:
        self.log = log

    def write(self, text: str) -> None:
        for stream in (self.log, self.echo):
            if stream is not None and not stream.closed:
                stream.write(text)
                stream.flush()

    def line(self, text: str) -> None:
        self.write(text + "\n")
