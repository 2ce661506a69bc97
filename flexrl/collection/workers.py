"""Several shares of a collection as spawned worker processes (see flexrl.collection): each
writes its shards and hands them over; when all are ready the parent's writer adopts them, in
worker order, and commits them as one version."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flexrl.collection.jobs import Job, write_episodes
from flexrl.errors import FlexrlError
from flexrl.rollout.progress import EpisodeProgress
from flexrl.store import ShardWriter


class _Abort(Exception):
    """The parent called the collection off: leave the writer without committing."""


_signalled: list[int] = []  # the worker's first interrupting signal


def _raise_interrupt(signum: int, frame: object) -> None:
    # Unwind once: a second signal (Ctrl-C reaches the workers and the parent's terminate
    # follows) must not interrupt the writer while it deletes its shards.
    if _signalled:
        return
    _signalled.append(signum)
    raise KeyboardInterrupt(f"worker got {signal.Signals(signum).name}")


def _worker(
    worker: int, job: Job, messages: Any, adopted: Any, abort: Any
) -> None:  # pragma: no cover - runs in a spawned process (tested through the CLI)
    """One worker: collect its share, write its shards, hand them to the parent, and let go of
    them once the parent's lease names them."""
    # SIGTERM (the parent's terminate) unwinds like Ctrl-C: the writer deletes its shards.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        from flexrl.seeding import seed_everything

        seed_everything(job.settings.seed + worker, torch_threads=1)
        with ShardWriter(
            job.settings.dataset,
            job.workspace,
            lineage=job.lineage,
            allow_nonfinite=job.settings.allow_nonfinite,
            float32=not job.settings.float64,
        ) as writer:
            write_episodes(
                job,
                writer,
                lambda ep: messages.put(("episode", worker, ep.length, ep.episode_return)),
            )
            # every shard on disk, still invisible; this writer's lease protects them from gc
            messages.put(("ready", worker, writer.hand_over(), writer.schema))
            while not adopted.wait(0.2):
                if abort.is_set() or os.getppid() == 1:  # called off, or the parent is gone
                    raise _Abort
            if abort.is_set():
                raise _Abort
            writer.let_go()  # the parent's lease names them now: leave them, commit nothing
        messages.put(("handed", worker))
    except (_Abort, KeyboardInterrupt):
        messages.put(("aborted", worker))
    except FlexrlError as e:
        messages.put(("error", worker, str(e), True))
    except BaseException as e:
        messages.put(("error", worker, f"{type(e).__name__}: {e}", False))


@contextmanager
def _stop_signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then handle them as before. A queue read that
    a signal's exception cuts short can leave half a message in the pipe; the next read then
    takes the rest of it as a length and blocks forever (the parent holds the pipe's write end,
    so no EOF comes). Blocking the signals would not do: Python runs its handlers in the main
    thread whichever thread the kernel hands a signal to."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers run in the main thread only: nothing cuts this thread's read
        return
    held: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: held.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            signal.raise_signal(held[0])  # its own handler runs now, as it would have


def _next_message(messages: Any, timeout: float) -> tuple[Any, ...] | None:
    """The next whole message, or None after `timeout` seconds without one."""
    with _stop_signals_deferred():
        try:
            return messages.get(timeout=timeout)
        except queue.Empty:
            return None


def run_workers(jobs: list[Job], bar: EpisodeProgress, writer: ShardWriter) -> None:
    """Start one spawned process per job and show their progress; once every worker has
    written its shards, `writer` adopts them in worker order (the caller commits them)."""
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    abort = ctx.Event()
    adopted = [ctx.Event() for _ in jobs]
    procs = [
        ctx.Process(
            target=_worker,
            args=(w, job, messages, adopted[w], abort),
            name=f"flexrl-collect-{w}",
            daemon=True,
        )
        for w, job in enumerate(jobs)
    ]
    started: list[mp.process.BaseProcess] = []
    ready: dict[int, tuple[Any, Any]] = {}
    done: set[int] = set()
    try:
        for proc in procs:
            proc.start()
            started.append(proc)
        while len(done) < len(procs):
            message = _next_message(messages, 0.2)
            if message is None:
                for w, proc in enumerate(procs):
                    if w not in done and proc.exitcode is not None:
                        # Exited without a last word: killed (OOM, kill -9) or crashed hard.
                        time.sleep(0.5)  # its last message may still be in the pipe
                        if messages.empty():
                            raise FlexrlError(
                                f"collect worker {w} died (exit code {proc.exitcode})"
                            ) from None
                continue
            kind, w = message[0], message[1]
            if kind == "episode":
                bar.advance(message[2], message[3])
            elif kind == "ready":
                ready[w] = (message[2], message[3])
                if len(ready) == len(procs):  # all written: take them over, in worker order
                    for k in range(len(procs)):
                        shards, schema = ready[k]
                        writer.adopt(shards, schema)
                        adopted[k].set()
            elif kind == "handed":
                done.add(w)
            elif kind == "error":
                if message[3]:
                    raise FlexrlError(f"collect worker {w}: {message[2]}")
                raise RuntimeError(f"collect worker {w} failed: {message[2]}")
            elif kind == "aborted":
                raise KeyboardInterrupt(f"collect worker {w} was interrupted")
        for proc in procs:
            proc.join()
    finally:
        abort.set()
        for proc in started:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker deletes its uncommitted shards
        # Keep reading while they exit: a worker blocks at exit until its messages are read.
        deadline = time.monotonic() + 10
        while any(p.is_alive() for p in started) and time.monotonic() < deadline:
            try:
                _next_message(messages, 0.1)
            except Exception:  # cut short by a killed worker: nothing left to use
                continue
        for proc in started:
            if proc.is_alive():
                proc.kill()
            proc.join()
        messages.close()
