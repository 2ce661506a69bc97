"""The local backend: a pool of `flexrl sweep run-trial` processes bounded by parallelism.

Retries, the non-retried exit 2 and the failure limit mirror what the Kubernetes Job does
with backoffLimitPerIndex, podFailurePolicy and maxFailedIndexes, so a sweep behaves the same
on a laptop and on a cluster. Ctrl-C (or `flexrl sweep cancel`, which sends SIGTERM) stops
every child; each records its trial `interrupted`, and `resume` picks them up again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from flexrl.orchestrate.records import SweepRecord, SweepStore, TrialStateName, utc_now
from flexrl.workspace import RunInterrupted

POLL_S = 0.1
STOP_GRACE_S = 60.0  # a training child writes a checkpoint before it exits on SIGTERM


@dataclass
class LocalOutcome:
    succeeded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    interrupted: list[int] = field(default_factory=list)
    not_started: list[int] = field(default_factory=list)
    stopped_early: bool = False  # more than max_failed_trials failed


def run_local(
    store: SweepStore,
    record: SweepRecord,
    indexes: list[int],
    notify: Callable[[str], None] = lambda line: None,
) -> LocalOutcome:
    """Run `indexes` to the end: each up to 1 + retries attempts, exit 2 never retried."""
    queue = deque(indexes)
    running: dict[int, tuple[subprocess.Popen[bytes], object]] = {}
    tries: dict[int, int] = dict.fromkeys(indexes, 0)
    outcome = LocalOutcome()
    limit = record.max_failed_trials
    previous_term = _raise_on_sigterm()
    try:
        while queue or running:
            while queue and len(running) < record.parallelism and not outcome.stopped_early:
                index = queue.popleft()
                tries[index] += 1
                running[index] = _launch(store, record, index)
                notify(f"trial {index}: started (attempt {tries[index]} of {record.retries + 1})")
            for index, (proc, log) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                log.close()  # type: ignore[attr-defined]
                del running[index]
                code = 128 - code if code < 0 else code
                if code == 0:
                    outcome.succeeded.append(index)
                    metric = store.load_state(record.id, index).metric
                    notify(f"trial {index}: succeeded ({record.metric.name}={metric})")
                elif code != 2 and tries[index] <= record.retries:
                    queue.appendleft(index)  # retried before new trials start
                    notify(f"trial {index}: failed with exit status {code}; retrying")
                else:
                    outcome.failed.append(index)
                    why = "bad input, not retried" if code == 2 else "no retries left"
                    notify(f"trial {index}: failed with exit status {code} ({why})")
                    if limit is not None and len(outcome.failed) > limit:
                        notify(f"more than {limit} trials failed: stopping the sweep")
                        outcome.stopped_early = True
                        _stop(store, record, running, outcome)
            if outcome.stopped_early:
                outcome.not_started.extend(queue)
                queue.clear()
            if running:
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        notify("interrupted: stopping every trial")
        _stop(store, record, running, outcome)
        outcome.not_started.extend(queue)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    return outcome


def _launch(store: SweepStore, record: SweepRecord, index: int) -> tuple[subprocess.Popen, object]:
    log = open(store.trial_dir(record.id, index) / "run-trial.log", "ab")  # noqa: SIM115
    argv = [sys.executable, "-m", "flexrl", "sweep", "run-trial", record.id]
    argv += ["--index", str(index), "--quiet", "--workspace", str(store.workspace)]
    # Its own session: a Ctrl-C in the terminal reaches only us, and we stop children in
    # order (SIGTERM, wait for their checkpoint and record, then SIGKILL stragglers).
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    return proc, log


def _stop(
    store: SweepStore,
    record: SweepRecord,
    running: dict[int, tuple[subprocess.Popen, object]],
    outcome: LocalOutcome,
) -> None:
    for proc, _ in running.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for proc, _ in running.values():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for index, (_, log) in running.items():
        log.close()  # type: ignore[attr-defined]
        state = store.load_state(record.id, index)
        if state.state not in (TrialStateName.SUCCEEDED, TrialStateName.FAILED):
            # The child records this itself; this covers one killed before it could.
            state.state = TrialStateName.INTERRUPTED
            state.error = state.error or "interrupted"
            if state.attempts and state.attempts[-1].ended_at is None:
                state.attempts[-1].ended_at = utc_now()
            store.save_state(record.id, state)
        (
            outcome.succeeded if state.state == TrialStateName.SUCCEEDED else outcome.interrupted
        ).append(index)
    running.clear()


def _raise_on_sigterm() -> signal.Handlers:
    """`flexrl sweep cancel` sends SIGTERM to the coordinator: stop like Ctrl-C does."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise RunInterrupted(signum)

    return signal.signal(signal.SIGTERM, handler)  # type: ignore[return-value]


def remaining(store: SweepStore, record: SweepRecord) -> list[int]:
    """Trials `resume` runs again: everything not succeeded (failed, interrupted, never run)."""
    return [s.index for s in store.states(record) if s.state != TrialStateName.SUCCEEDED]
