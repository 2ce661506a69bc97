"""Writer leases: gc on one host never deletes what a live writer on another will commit; a
commit never names a shard that is gone; a dead writer's lease expires and gc cleans up."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flexrl.errors import FlexrlError
from flexrl.store import ShardWriter, gc, open_dataset, verify

from ._worker import episode
from .conftest import cli, cli_subprocess, random_episode, tree_digest, write_episodes

WORKER = str(Path(__file__).with_name("_worker.py"))
TWO_HOURS = 2 * 3600


def start_pod(ws: Path, tmp_path: Path, ttl: float) -> tuple[subprocess.Popen, Path]:
    """A writer on "another host" (its own host id) holding 3 finished, uncommitted shards."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, WORKER, "pod", str(ws), "walk", str(ready), str(go), str(ttl)],
        env={**os.environ, "FLEXRL_HOST_ID": f"pod-{tmp_path.name}"},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the pod writer never got ready"
        time.sleep(0.05)
    return proc, go


def base_version(ws: Path) -> None:
    """v1: three episodes of the pod writer's schema."""
    with ShardWriter("walk", ws, durable=False) as writer:
        for k in range(3):
            writer.add_episode(**episode(0, k))


def uncommitted(ws: Path) -> list[Path]:
    committed = {s.id for s in open_dataset("walk", ws).manifest.shards}
    return [p for p in sorted((ws / "datasets/walk/shards").iterdir()) if p.name not in committed]


def age(paths: list[Path], seconds: float) -> None:
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


def test_gc_elsewhere_never_deletes_a_live_writers_shards(ws: Path, tmp_path: Path) -> None:
    base_version(ws)
    proc, go = start_pod(ws, tmp_path, ttl=60)
    pending = uncommitted(ws)
    assert len(pending) == 3
    age(pending, TWO_HOURS)  # older than --grace: without a lease they would count as abandoned

    out = cli_subprocess("data", "gc", "walk", "--apply", "--workspace", str(ws))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("writer running") == 3 and "deleted 0 orphans" in out.stdout
    assert all(p.is_dir() for p in pending)

    go.touch()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    ds = open_dataset("walk", ws)
    assert ds.version == 2 and len(ds) == 9
    assert [e.seed for e in ds][3:] == [7000 + k for k in range(6)]
    assert verify("walk", ws).ok
    assert gc("walk", ws) == []  # the lease went with the commit
    assert not any((ws / "datasets/walk/leases").iterdir())


def test_killed_writer_lease_expires_then_gc_cleans_up(ws: Path, tmp_path: Path) -> None:
    base_version(ws)
    versions = tree_digest(ws / "datasets/walk/versions")
    ttl = 2.0
    proc, _ = start_pod(ws, tmp_path, ttl=ttl)
    assert [o.status for o in gc("walk", ws, grace_s=0)] == ["writer running"] * 3
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    killed = time.monotonic()

    # Another host's pid cannot be checked: only the lease's expiry frees its shards.
    while any(o.status == "writer running" for o in gc("walk", ws, grace_s=0)):
        assert time.monotonic() - killed < ttl + 10, "the lease never expired"
        time.sleep(0.1)
    waited = time.monotonic() - killed
    orphans = gc("walk", ws, grace_s=0)
    assert [o.kind for o in orphans] == ["shard"] * 3 + ["lease"]
    assert all(o.status == "deletable" for o in orphans)
    # The grace (the clock-skew allowance) still protects them.
    assert {o.status for o in gc("walk", ws)} == {"writer running"}

    out = cli("data", "gc", "walk", "--apply", "--grace", "0", "--workspace", str(ws))
    assert out.code == 0, out.stderr
    assert not any(Path(o.path).exists() for o in orphans)
    assert gc("walk", ws, grace_s=0) == []
    assert tree_digest(ws / "datasets/walk/versions") == versions
    assert verify("walk", ws).ok and len(open_dataset("walk", ws)) == 3
    assert waited < ttl + 10


@pytest.mark.parametrize("collected", [True, False], ids=["gc-ran", "no-gc"])
def test_writer_whose_lease_lapsed_refuses_to_commit(
    ws: Path, tmp_path: Path, collected: bool
) -> None:
    """A writer stopped past its lease (a suspended pod) must not commit when it wakes up."""
    base_version(ws)
    versions = tree_digest(ws / "datasets/walk/versions")
    proc, go = start_pod(ws, tmp_path, ttl=1.0)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(2.5)
        if collected:
            orphans = gc("walk", ws, apply=True, grace_s=0)
            assert [o.deleted for o in orphans] == [True] * 4
    finally:
        go.touch()
        os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "nothing was committed" in err and ("lease lapsed" in err or "is gone" in err)
    assert tree_digest(ws / "datasets/walk/versions") == versions
    assert verify("walk", ws).ok and len(open_dataset("walk", ws)) == 3
    assert gc("walk", ws, grace_s=0) == []  # the writer cleaned up after itself


@pytest.mark.parametrize("gone", ["directory", "rewards/c.0"])
def test_commit_refuses_a_shard_that_is_gone(ws: Path, rng, gone: str) -> None:
    write_episodes(ws, "walk", [random_episode(rng, seed=i) for i in range(3)])
    before = tree_digest(ws)
    writer = ShardWriter("walk", ws, shard_episodes=1, durable=False)
    match = rf"this writer's shard \S+ is gone \({gone} missing"
    with pytest.raises(FlexrlError, match=match) as caught, writer:
        for i in range(2):
            writer.add(random_episode(rng, seed=10 + i))
        shard = ws / "datasets/walk/shards" / writer._pending[0].id
        if gone == "directory":
            shutil.rmtree(shard)  # as an old gc did
        else:
            (shard / gone).unlink()
    assert "\n" not in str(caught.value) and "nothing was committed" in str(caught.value)
    assert tree_digest(ws) == before  # no version, no leftover shard, no lease
    assert open_dataset("walk", ws).version == 1


def test_a_version_never_inherits_a_missing_shard(ws: Path, rng) -> None:
    write_episodes(ws, "walk", [random_episode(rng, seed=i) for i in range(4)], shard_episodes=2)
    gone = open_dataset("walk", ws).manifest.shards[0].id
    shutil.rmtree(ws / "datasets/walk/shards" / gone)
    before = tree_digest(ws)
    with pytest.raises(FlexrlError, match=f"v1 names shard {gone}, which is gone"):
        write_episodes(ws, "walk", [random_episode(rng, seed=9)])
    assert tree_digest(ws) == before
    assert [p.message for p in verify("walk", ws).problems] == ["shard directory is missing"]


def test_many_writers_with_gc_running_lose_nothing(ws: Path) -> None:
    """gc --apply in a loop while four writers commit shard after shard, on "four hosts"."""
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, "commits", str(ws), "walk", str(w), "6"],
            env={**os.environ, "FLEXRL_HOST_ID": f"host-{w}"},
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    while any(p.poll() is None for p in procs):
        if (ws / "datasets/walk").is_dir():
            gc("walk", ws, apply=True, grace_s=0)
    for p in procs:
        assert p.returncode == 0, p.stderr.read() if p.stderr else ""
    ds = open_dataset("walk", ws)
    assert len(ds) == 24 and verify("walk", ws).ok
    assert sorted(ds.index.seeds.tolist()) == sorted(
        w * 1000 + k for w in range(4) for k in range(6)
    )
    np.testing.assert_array_equal(
        ds.array("observations")[:, 0], np.repeat(ds.index.seeds, ds.episode_lengths)
    )


def test_gc_finishes_a_deletion_it_was_stopped_in(ws: Path, rng) -> None:
    """gc renames a shard into tmp/<id>.deleted before removing it; a leftover is deletable."""
    write_episodes(ws, "walk", [random_episode(rng, seed=i) for i in range(2)])
    leftover = ws / "datasets/walk/tmp/20260101T000000-abcdef-1-00000000.deleted"
    (leftover / "observations").mkdir(parents=True)
    (leftover / "observations/c.0.0").write_bytes(b"x")
    assert [(o.kind, o.status) for o in gc("walk", ws)] == [("tmp", "deletable")]
    assert [o.deleted for o in gc("walk", ws, apply=True)] == [True]
    assert not leftover.exists() and verify("walk", ws).ok


def test_shards_handed_over_become_one_version_and_stay_protected(ws: Path) -> None:
    """What `collect --workers W` does: W writers hand their flushed shards to one writer that
    adopts them (its lease names them before theirs let go) and commits them as one version."""
    base_version(ws)
    workers = [ShardWriter("walk", ws, durable=False, shard_episodes=2) for _ in range(2)]
    for w, writer in enumerate(workers):
        for k in range(3):
            writer.add_episode(**episode(1, 10 * w + k))
    parent = ShardWriter("walk", ws, durable=False, message="one collection")
    for writer in workers:
        parent.adopt(writer.hand_over(), writer.schema)
    pending = uncommitted(ws)
    assert len(pending) == 4  # 2 + 1 per worker
    age(pending, TWO_HOURS)
    for writer in workers:
        writer.let_go()  # nothing deleted, nothing committed
        assert writer.commit() is None
    assert all(p.is_dir() for p in pending)
    orphans = gc("walk", ws, apply=True, grace_s=0)  # the parent's lease protects them
    assert len(orphans) == 4 and {o.status for o in orphans} == {"writer running"}
    assert all(p.is_dir() for p in pending)
    manifest = parent.commit()
    assert manifest is not None and manifest.version == 2
    ds = open_dataset("walk", ws)
    assert [e.seed for e in ds][3:] == [1000 + 10 * w + k for w in range(2) for k in range(3)]
    assert verify("walk", ws).ok
    assert not any((ws / "datasets/walk/leases").iterdir())
