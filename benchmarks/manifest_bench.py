"""Manifest cost against a dataset's history: commit time, metadata bytes and open time.

    .venv/bin/python benchmarks/manifest_bench.py [--at 100 10000] [--full-upto 300]

Commits one-episode versions (one small Humanoid-shaped shard each: 348 float32 observations,
17 actions, goals, 20 steps; durable=False, so the disk's fsync is not what is measured) to a
fresh dataset. At each count in --at it records: the median time of the last 50 commits
(`commit_shards` alone: each shard is written before the clock starts), the bytes of all
manifests and of the newest one, and the median time to open a version and count its episodes,
for the latest version and the worst one (the most deltas since a checkpoint).

Two layouts, side by side in one run:
  - format 3: a manifest lists the shards it adds and its parent's digest; every 100th is a
    checkpoint listing every shard;
  - format 2's commit (commit_full below): read the latest manifest, write one that lists
    every shard, only up to --full-upto versions: its metadata grows with the square of the
    history, so it is extrapolated beyond that.
Writes benchmarks/results/manifest_bench.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from flexrl.store import ShardWriter, open_dataset
from flexrl.store import format as fmt
from flexrl.store.episode import make_episode
from flexrl.store.writer import latest_manifest

RESULTS = Path(__file__).parent / "results"
STEPS = 20


def episode(rng: np.random.Generator, seed: int):
    return make_episode(
        observations=rng.normal(size=(STEPS + 1, 348)).astype(np.float32),
        actions=rng.uniform(-0.4, 0.4, size=(STEPS, 17)).astype(np.float32),
        rewards=rng.normal(size=STEPS).astype(np.float32),
        terminations=np.arange(STEPS) == STEPS - 1,
        truncations=np.zeros(STEPS, bool),
        goals=np.tile(np.float32([1.0, 0.0, 0.0]), (STEPS, 1)),
        seed=seed,
        task="walk_forward",
    )


def median_time(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def commit_full(writer: ShardWriter) -> None:
    """Format 2's commit: read the latest manifest, write one listing its every shard and
    the new ones. (The same Manifest code with every version a self-contained checkpoint.)"""
    shards = writer.hand_over()
    latest = latest_manifest(writer.paths)
    parent, digest = latest if latest else (None, None)
    before = parent.shards if parent and parent.shards is not None else []
    manifest = fmt.Manifest(
        name="walk",
        version=parent.version + 1 if parent else 1,
        created_at=fmt.utc_now(),
        schema=writer.schema,
        own=before + shards,
        added=[s.id for s in shards],
        lineage=writer.lineage,
        episodes=sum(s.episodes for s in before + shards),
        steps=sum(s.steps for s in before + shards),
        nbytes=sum(s.nbytes for s in before + shards),
        shard_count=len(before + shards),
        parent_digest=digest,
    )
    assert writer.paths.backend.create(writer.paths.version(manifest.version), manifest.to_bytes())
    writer.let_go()


def grow(root: Path, full: bool, at: list[int]) -> list[dict]:
    """Commit versions one by one; measure at each count in `at`."""
    rng = np.random.default_rng(0)
    versions = root / "datasets/walk/versions"
    commit_times: list[float] = []
    rows = []
    for v in range(1, max(at) + 1):
        writer = ShardWriter("walk", root, durable=False)
        writer.add(episode(rng, v))
        writer.flush()  # the shard is written; what remains is the commit
        start = time.perf_counter()
        commit_full(writer) if full else writer.commit()
        commit_times.append(time.perf_counter() - start)
        if v not in at:
            continue
        # the latest is often a checkpoint (10,000): the one before it reads 99 deltas
        worst = v - 1 if fmt.is_checkpoint(v) and v > 1 and not full else v
        rows.append(
            {
                "versions": v,
                "commit_ms": 1000 * statistics.median(commit_times[-50:]),
                "metadata_bytes": sum(p.stat().st_size for p in versions.iterdir()),
                "newest_manifest_bytes": (versions / fmt.version_file(v)).stat().st_size,
                "shard_bytes": sum(
                    p.stat().st_size for p in (root / "datasets/walk/shards").rglob("*")
                ),
                "open_latest_ms": 1000 * median_time(lambda: len(open_dataset("walk", root))),
                "worst_version": worst,
                "open_worst_ms": 1000
                * median_time(lambda w=worst: len(open_dataset(f"walk@v{w}", root))),
            }
        )
        print(f"  {'format 2' if full else 'format 3'}: {rows[-1]}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--full-upto", type=int, default=300)
    args = parser.parse_args()
    results = {}
    full_at = sorted({n for n in args.at if n <= args.full_upto} | {args.full_upto})
    for label, full, at in (
        ("format 2 (every manifest lists every shard)", True, full_at),
        (f"format 3 (deltas, a checkpoint every {fmt.CHECKPOINT_EVERY})", False, args.at),
    ):
        root = Path(tempfile.mkdtemp(prefix="manifest-bench-"))
        try:
            results[label] = grow(root, full, sorted(set(at)))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "manifest_bench.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{'layout':<46} {'versions':>8} {'commit ms':>10} {'metadata':>10} "
          f"{'newest':>9} {'open ms':>8} {'worst open ms':>14}")  # fmt: skip
    for label, rows in results.items():
        for r in rows:
            print(
                f"{label:<46} {r['versions']:>8,} {r['commit_ms']:>10.2f} "
                f"{r['metadata_bytes'] / 2**20:>8.1f}MB "
                f"{r['newest_manifest_bytes'] / 1024:>7.1f}KB "
                f"{r['open_latest_ms']:>8.1f} {r['open_worst_ms']:>8.1f} (v{r['worst_version']})"
            )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
