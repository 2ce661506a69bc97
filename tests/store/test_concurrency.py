"""Many real processes committing into one dataset; writers killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flexrl.store import gc, open_dataset, resolve, verify

from .conftest import cli

WORKER = str(Path(__file__).with_name("_worker.py"))
WRITERS, COMMITS = 8, 20


def test_eight_processes_twenty_commits_each(ws: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, "commits", str(ws), "walk", str(w), str(COMMITS)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WRITERS)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    total = WRITERS * COMMITS
    final = open_dataset("walk", ws)
    assert final.version == total and len(final) == total
    seeds = final.index.seeds
    assert sorted(seeds.tolist()) == sorted(
        w * 1000 + k for w in range(WRITERS) for k in range(COMMITS)
    )
    # Each writer's episodes appear in its own commit order.
    for w in range(WRITERS):
        mine = seeds[(seeds // 1000) == w]
        assert mine.tolist() == [w * 1000 + k for k in range(COMMITS)]
    # Every data value is where its episode says it is.
    obs = final.array("observations")[:, 0]
    np.testing.assert_array_equal(obs, np.repeat(seeds, final.episode_lengths).astype(np.float32))
    # Every intermediate version is readable, one episode longer than its parent, a prefix of
    # the final order, and the episode it added reads back.
    previous = None
    for v in range(1, total + 1):
        ds = open_dataset(f"walk@v{v}", ws)
        assert len(ds) == v
        np.testing.assert_array_equal(ds.index.seeds, seeds[:v])
        added = ds.episode(v - 1)
        assert added.seed == seeds[v - 1] and added.observations[0, 0] == seeds[v - 1]
        if previous is not None:
            assert ds.manifest.parent_digest == previous
        previous = ds.digest
    assert verify("walk", ws).ok
    assert gc("walk", ws) == []
    # 160 versions crossed a checkpoint, committed in the race too: v100 lists its own shard
    # and names one segment holding the 99 before it.
    checkpoints = [v for v in range(1, total + 1) if manifest_of(ws, v)["checkpoint"]]
    v100 = manifest_of(ws, 100)
    assert checkpoints == [1, 100] and len(v100["shards"]) == 1
    assert [(s["shards"], s["versions"]) for s in v100["segments"]] == [(99, [1, 99])]


def manifest_of(ws: Path, version: int) -> dict:
    return json.loads((ws / f"datasets/walk/versions/v{version:06d}.json").read_bytes())


@pytest.mark.parametrize("where", ["mid-shard", "before-commit"])
def test_writer_killed_with_sigkill(ws: Path, tmp_path: Path, where: str) -> None:
    signal_file = tmp_path / "signal"
    proc = subprocess.Popen(
        [sys.executable, WORKER, "crash", str(ws), "walk", where, str(signal_file)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not signal_file.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the writer never reached the crash point"
        time.sleep(0.05)
    orphans = gc("walk", ws)  # while the writer lives its shard is protected
    assert [o.status for o in orphans] == ["writer running"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    ds = open_dataset("walk", ws)
    assert ds.version == 1 and len(ds) == 5
    assert [e.seed for e in ds] == [0, 1, 2, 3, 4]
    assert verify("walk", ws).ok

    orphans = gc("walk", ws)  # its shard, and its lease (its pid is gone from this host)
    assert [o.kind for o in orphans] == ["tmp" if where == "mid-shard" else "shard", "lease"]
    assert all(o.status == "deletable" and o.nbytes > 0 for o in orphans)
    listed = cli("data", "gc", "walk", "--json", "--workspace", str(ws))
    assert listed.code == 0 and str(orphans[0].path) in listed.stdout
    assert all(Path(o.path).exists() for o in orphans)  # listing deletes nothing
    applied = cli("data", "gc", "walk", "--apply", "--workspace", str(ws))
    assert applied.code == 0, applied.stderr
    assert not any(Path(o.path).exists() for o in orphans)
    assert gc("walk", ws) == []
    assert resolve("walk", ws).version == 1 and verify("walk", ws).ok
