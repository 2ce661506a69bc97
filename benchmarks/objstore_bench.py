"""A dataset on an S3-compatible server against the same dataset on local disk.

The server is moto's, on loopback (the one the tests start, tests/store/s3server.py): it keeps
objects in memory and answers from one Python process, so it is the slow S3 of the two ends a
lab meets, with no network latency. Humanoid-shaped data (store_bench.make_episodes). In one
run, interleaved repeats (medians):

- write: ShardWriter steps/s (and MB/s of stored bytes) into a local workspace (fsynced) and
  into s3://;
- read all: open the latest version and read every chunk the windows need (WindowSampler
  preload: each chunk fetched, digest-checked, decoded) from local disk, from S3 with an empty
  local object cache (cold), and from S3 again with the cache filled (warm);
- windows: a fresh sampler with a small in-memory budget (not the whole dataset), batches of
  64 windows of 20 steps, every chunk read through the store (local / cold / warm).

    .venv/bin/python benchmarks/objstore_bench.py [--quick]

Prints a table and writes benchmarks/results/objstore_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests" / "store")]

from s3server import s3_server  # noqa: E402
from store_bench import make_episodes  # noqa: E402

from flexrl.store import ShardWriter, open_dataset, reader  # noqa: E402
from flexrl.store.sampling import WindowSampler  # noqa: E402

WINDOW, BATCH = 20, 64
RESULTS = HERE / "results" / "objstore_bench.json"


def write(target: str, ws: Path, episodes: list[dict]) -> float:
    t = time.perf_counter()
    with ShardWriter(target, ws) as w:
        for e in episodes:
            w.add_episode(**e)
    return time.perf_counter() - t


def fresh(ref: str, ws: Path):
    reader._shard_cache.clear()  # no reader state carried from one measurement to the next
    return open_dataset(ref, ws)


def read_all(ref: str, ws: Path) -> float:
    t = time.perf_counter()
    assert WindowSampler(fresh(ref, ws), WINDOW, seed=0).preload()
    return time.perf_counter() - t


def windows(ref: str, ws: Path, batches: int, budget: int) -> float:
    t = time.perf_counter()
    sampler = WindowSampler(fresh(ref, ws), WINDOW, seed=1, cache_bytes=budget)
    for _ in range(batches):
        sampler.sample(BATCH)
    return batches * BATCH / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (under a minute)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    episodes_n, repeats, batches = (8, 1, 50) if args.quick else (40, 3, 300)
    episodes = make_episodes(episodes_n, 1000, seed=0)
    steps = sum(len(e["actions"]) for e in episodes)
    tmp = Path(tempfile.mkdtemp(prefix="objstore-bench-"))
    cache = tmp / "cache"
    os.environ["FLEXRL_CACHE_DIR"] = str(cache)
    runs: dict[str, list[float]] = {}
    try:
        with s3_server() as env:
            os.environ.update(env)
            for i in range(repeats):
                local, remote = f"walk{i}", f"s3://flexrl/bench/walk{i}"
                for key, target in (("write_local", local), ("write_s3", remote)):
                    runs.setdefault(key, []).append(steps / write(target, tmp / "ws", episodes))
                nbytes = open_dataset(local, tmp / "ws").manifest.nbytes
                budget = nbytes // 8  # the in-memory chunk cache holds an eighth of it
                read_all(local, tmp / "ws")  # untimed: the process's first large buffers
                for key, ref in (("local", local), ("cold", remote), ("warm", remote)):
                    if key == "cold":
                        shutil.rmtree(cache, ignore_errors=True)
                    runs.setdefault(f"read_all_{key}_s", []).append(read_all(ref, tmp / "ws"))
                for key, ref in (("local", local), ("cold", remote), ("warm", remote)):
                    if key == "cold":
                        shutil.rmtree(cache, ignore_errors=True)
                    rate = windows(ref, tmp / "ws", batches, budget)
                    runs.setdefault(f"windows_{key}", []).append(rate)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {key: float(np.median(values)) for key, values in runs.items()}
    result.update(
        runs=runs,
        steps=steps,
        stored_mb=nbytes / 1e6,
        write_local_mb_s=result["write_local"] * nbytes / steps / 1e6,
        write_s3_mb_s=result["write_s3"] * nbytes / steps / 1e6,
        windows_batches=batches,
        repeats=repeats,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    r = result
    print(f"{steps} steps, {r['stored_mb']:.1f} MB stored; medians of {repeats}")
    print(f"{'':28}{'local':>10}{'S3 cold':>10}{'S3 warm':>10}{'warm/local':>12}")
    print(
        f"{'write (steps/s)':28}{r['write_local']:>10.0f}{r['write_s3']:>10.0f}{'':>10}"
        f"{'':>12}  (S3/local {r['write_s3'] / r['write_local']:.2f})"
    )
    print(f"{'write (MB/s)':28}{r['write_local_mb_s']:>10.1f}{r['write_s3_mb_s']:>10.1f}")
    local_s, cold_s, warm_s = (r[f"read_all_{k}_s"] for k in ("local", "cold", "warm"))
    print(
        f"{'read every chunk (s)':28}{local_s:>10.2f}{cold_s:>10.2f}{warm_s:>10.2f}"
        f"{local_s / warm_s:>12.2f}"
    )
    wl, wc, ww = (r[f"windows_{k}"] for k in ("local", "cold", "warm"))
    print(f"{'windows/s (1/8 in memory)':28}{wl:>10.0f}{wc:>10.0f}{ww:>10.0f}{ww / wl:>12.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
