"""Shared fixtures: a fresh workspace per test and a way to run the real `flexrl` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "ws"


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
):
    """Run `flexrl ARGS` in a real subprocess, as a user would."""
    full_env = {**os.environ, "FLEXRL_DEBUG": "", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "flexrl", *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli
