"""Shared helpers for store tests: small random episodes, datasets, the CLI in-process."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from flexrl.store import Episode, ShardWriter, make_episode

REPO = Path(__file__).resolve().parents[2]
OBS_DIM, ACT_DIM = 4, 2


def random_episode(
    rng: np.random.Generator,
    length: int | None = None,
    *,
    task: str | None = "walk",
    seed: int | None = None,
    goals: bool = False,
    tag: float | None = None,
) -> Episode:
    """An episode with T+1 observations; `tag` fills observation[:, 0] to recognise it later."""
    steps = int(rng.integers(1, 40)) if length is None else length
    obs = rng.normal(size=(steps + 1, OBS_DIM)).astype(np.float32)
    if tag is not None:
        obs[:, 0] = tag
    terminated = bool(rng.integers(0, 2))
    return make_episode(
        observations=obs,
        actions=rng.normal(size=(steps, ACT_DIM)).astype(np.float32),
        rewards=rng.normal(size=steps).astype(np.float32),
        terminations=np.arange(steps) == steps - 1 if terminated else np.zeros(steps, bool),
        truncations=np.arange(steps) == steps - 1 if not terminated else np.zeros(steps, bool),
        goals=rng.normal(size=(steps, 3)).astype(np.float64) if goals else None,
        infos={"speed": rng.normal(size=steps).astype(np.float32)},
        seed=seed,
        task=task,
        policy="ppo-1",
    )


def write_episodes(workspace: Path, name: str, episodes: list[Episode], **kwargs) -> None:
    with ShardWriter(name, workspace, durable=False, **kwargs) as writer:
        for episode in episodes:
            writer.add(episode)


def assert_same_episode(a: Episode, b: Episode) -> None:
    for key, value in a.step_arrays().items():
        other = b.step_arrays()[key]
        assert value.dtype == other.dtype, key
        np.testing.assert_array_equal(value, other, err_msg=key)
    np.testing.assert_array_equal(a.final_observation, b.final_observation)
    assert (a.seed, a.task, a.policy, a.instruction) == (b.seed, b.task, b.policy, b.instruction)


def tree_digest(root: Path) -> str:
    """One digest of every file name and byte under root: 'nothing stored changed'."""
    h = hashlib.sha256()
    for dirpath, dirnames, names in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(names):
            path = Path(dirpath) / name
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def cli(*args: str) -> CliResult:
    """Run `flexrl ARGS` in this process through flexrl.cli.main (exit code, output)."""
    from flexrl.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


def cli_subprocess(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLEXRL_DEBUG": "", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "flexrl", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return tmp_path / "ws"


@pytest.fixture(scope="session")
def s3_server_env():
    """A real S3-compatible server on loopback for the whole session (see s3server.py)."""
    from .s3server import s3_server

    with s3_server() as env:
        yield env


@pytest.fixture
def s3(s3_server_env, monkeypatch, tmp_path: Path) -> str:
    """A fresh prefix on the S3 server, its environment set, and a private object cache."""
    for key, value in s3_server_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FLEXRL_CACHE_DIR", str(tmp_path / "cache"))
    return f"s3://flexrl/{tmp_path.name}"
