"""Progress bars of long rollouts, on stderr (rich): episodes for eval and collect, frames for a
video."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress_bar(
    label: str, unit: str, enabled: bool, total: int | None = None
) -> Iterator[Callable[[], None]]:
    """A bar with its rate; yields `advance()`."""
    bar = Progress(
        TextColumn(f"[bold]{label}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{unit} · {{task.fields[rate]}}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
    task = bar.add_task(label, total=total, rate="-")
    start = time.monotonic()
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        elapsed = time.monotonic() - start
        bar.update(task, advance=1, rate=f"{done / elapsed:.1f}/s" if elapsed > 0 else "-")

    with bar:
        yield advance


class EpisodeProgress:
    """Episodes done of `total`, episodes/s, steps/s and the mean return of the last 100; it
    also keeps the count of steps and every return (or shows nothing, when disabled)."""

    def __init__(self, total: int, description: str, enabled: bool):
        self.t0 = time.monotonic()
        self.steps = 0
        self.returns: list[float] = []
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("episodes · {task.fields[eps]:.1f} ep/s · {task.fields[sps]:,.0f} steps/s"),
            TextColumn("· return {task.fields[ret]:.1f}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self.task = self.bar.add_task(description, total=total, eps=0.0, sps=0.0, ret=0.0)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.t0

    def advance(self, length: int, episode_return: float) -> None:
        self.steps += length
        self.returns.append(episode_return)
        elapsed = max(self.seconds, 1e-9)
        self.bar.update(
            self.task,
            advance=1,
            eps=len(self.returns) / elapsed,
            sps=self.steps / elapsed,
            ret=float(np.mean(self.returns[-100:])),
        )

    def __enter__(self) -> EpisodeProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)
