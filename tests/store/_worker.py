"""A writer process for the concurrency and crash tests (run as a script, not collected).

python _worker.py commits WS NAME WRITER N      N commits of one episode each
python _worker.py crash WS NAME WHERE           commit v1, then hang mid-shard / pre-commit
python _worker.py pod WS NAME READY GO TTL      write 3 shards, wait for GO, then commit
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from flexrl.store import Lineage, ShardWriter


def episode(writer: int, k: int) -> dict:
    steps = 3 + (writer + k) % 5
    obs = np.full((steps + 1, 3), writer * 1000 + k, dtype=np.float32)
    return dict(
        observations=obs,
        actions=np.full((steps, 2), k, dtype=np.float32),
        rewards=np.full(steps, writer, dtype=np.float32),
        terminations=np.arange(steps) == steps - 1,
        truncations=np.zeros(steps, bool),
        seed=writer * 1000 + k,
        task=f"w{writer}",
    )


def commits(ws: str, name: str, writer: int, n: int) -> None:
    for k in range(n):
        with ShardWriter(name, ws, lineage=Lineage(producer_run=f"run-{writer}")) as w:
            w.add_episode(**episode(writer, k))


def crash(ws: str, name: str, where: str, signal_file: str) -> None:
    with ShardWriter(name, ws) as w:
        for k in range(5):
            w.add_episode(**episode(0, k))
    if where == "mid-shard":  # on any backend: a local directory or an object store
        from flexrl.store import backend

        count = [0]

        def slow(put):
            def put_then_hang(self, key, data):
                size = put(self, key, data)
                count[0] += 1
                if count[0] == 6:  # some objects of the shard are stored, others not yet
                    Path(signal_file).write_text("writing")
                    time.sleep(600)
                return size

            return put_then_hang

        backend._LocalShard.put = slow(backend._LocalShard.put)
        backend._ObjectShard.put = slow(backend._ObjectShard.put)
    else:  # the shard is complete in shards/ but no version names it yet
        from flexrl.store import writer as writer_module

        def hang(*args, **kwargs):
            Path(signal_file).write_text("committing")
            time.sleep(600)

        writer_module.commit_shards = hang
    w = ShardWriter(name, ws)
    for k in range(5, 9):
        w.add_episode(**episode(0, k))
    w.commit()


def pod(ws: str, name: str, ready: str, go: str, ttl: str) -> None:
    """A long collection: finished shards stay uncommitted until the end (as `collect` does)."""
    with ShardWriter(name, ws, shard_episodes=2, lease_ttl_s=float(ttl)) as w:
        for k in range(6):
            w.add_episode(**episode(7, k))
        Path(ready).write_text("written")
        while not Path(go).exists():
            time.sleep(0.05)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "pod":
        pod(*sys.argv[2:7])
    elif mode == "commits":
        commits(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        crash(*sys.argv[2:6])
