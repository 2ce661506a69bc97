"""flexrl's trajectory store against Minari (HDF5, Arrow) and an in-memory numpy copy.

Humanoid-shaped data: 348-dim float32 observations (the last 78, contact forces, are mostly
zero as in Humanoid), 17-dim float32 actions; long (1,000-step) and short (25-step) episodes.

    .venv/bin/python benchmarks/store_bench.py            # default run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/store_bench.py --quick    # smaller

Prints a table and writes benchmarks/results/store_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from flexrl.store import ShardWriter, open_dataset
from flexrl.store.sampling import WindowSampler

OBS, ACT, WINDOW, BATCH = 348, 17, 20, 64
RESULTS = Path(__file__).resolve().parent / "results" / "store_bench.json"


@dataclass
class Config:
    long_episodes: int
    short_episodes: int
    append_small: int
    append_large: int
    minari_append_large: int
    sample_batches: int


DEFAULT = Config(60, 2400, 200, 20_000, 2_000, 200)
QUICK = Config(12, 400, 200, 2_000, 600, 50)


def make_episodes(n: int, steps: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        obs = rng.normal(size=(steps + 1, OBS)).astype(np.float32)
        obs[:, 270:] = 0.0
        obs[:, 270:280] = rng.normal(size=(steps + 1, 10)) * (rng.random((steps + 1, 1)) < 0.1)
        out.append(
            dict(
                observations=obs,
                actions=rng.uniform(-0.4, 0.4, size=(steps, ACT)).astype(np.float32),
                rewards=rng.normal(size=steps).astype(np.float32),
                terminations=np.arange(steps) == steps - 1,
                truncations=np.zeros(steps, bool),
            )
        )
    return out


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def minari_buffers(episodes: list[dict], first_id: int = 0) -> list:
    from minari.data_collector import EpisodeBuffer

    return [
        EpisodeBuffer(
            id=first_id + i,
            observations=e["observations"],
            actions=e["actions"],
            rewards=e["rewards"],
            terminations=e["terminations"],
            truncations=e["truncations"],
            infos={},
        )
        for i, e in enumerate(episodes)
    ]


def minari_create(dataset_id: str, episodes: list[dict], fmt: str):
    import minari
    from gymnasium import spaces

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minari.create_dataset_from_buffers(
            dataset_id,
            minari_buffers(episodes),
            observation_space=spaces.Box(-np.inf, np.inf, (OBS,), np.float32),
            action_space=spaces.Box(-1, 1, (ACT,), np.float32),
            data_format=fmt,
        )


def flexrl_write(ws: Path, name: str, episodes: list[dict], durable: bool = True) -> None:
    with ShardWriter(name, ws, durable=durable) as w:
        for e in episodes:
            w.add_episode(**e)


def bench_write(tmp: Path, kind: str, episodes: list[dict]) -> dict:
    steps = sum(len(e["actions"]) for e in episodes)
    row = {}
    t = time.perf_counter()
    flexrl_write(tmp / "ws", kind, episodes)
    row["flexrl"] = steps / (time.perf_counter() - t)
    row["flexrl_bytes"] = du(tmp / "ws/datasets" / kind)
    # Minari never fsyncs; this is flexrl with the same (process-crash-only) guarantee
    t = time.perf_counter()
    flexrl_write(tmp / "ws-nofsync", kind, episodes, durable=False)
    row["flexrl_nofsync"] = steps / (time.perf_counter() - t)
    for fmt in ("hdf5", "arrow"):
        t = time.perf_counter()
        minari_create(f"{kind}-{fmt}-v0", episodes, fmt)
        row[f"minari_{fmt}"] = steps / (time.perf_counter() - t)
        row[f"minari_{fmt}_bytes"] = du(tmp / "minari" / f"{kind}-{fmt}-v0")
    return row


def bench_windows(tmp: Path, kind: str, batches: int) -> dict:
    ds = open_dataset(kind, tmp / "ws")
    rng = np.random.default_rng(0)
    row = {}
    # flexrl, chunk cache large enough: the first pass reads from disk (page cache), then memory
    sampler = WindowSampler(ds, WINDOW, seed=0)
    sampler.sample(BATCH)
    t = time.perf_counter()
    for _ in range(batches):
        sampler.sample(BATCH)
    row["flexrl_cached"] = batches * BATCH / (time.perf_counter() - t)
    # flexrl, cold each batch: a fresh sampler with a small cache (every window read from disk)
    t = time.perf_counter()
    n = max(5, batches // 10)
    for i in range(n):
        WindowSampler(ds, WINDOW, seed=i, cache_bytes=32 << 20).sample(BATCH)
    row["flexrl_disk"] = n * BATCH / (time.perf_counter() - t)
    # in-memory numpy copy of the same data, same window arithmetic
    obs, act, rew = ds.array("observations"), ds.array("actions"), ds.array("rewards")
    starts, lengths = ds.episode_starts, ds.episode_lengths
    t = time.perf_counter()
    for _ in range(batches):
        ends = rng.integers(0, len(rew), size=BATCH)
        ep = np.searchsorted(starts, ends, side="right") - 1
        rows = np.maximum(ends[:, None] + np.arange(-WINDOW + 1, 1), starts[ep][:, None])
        obs[rows], act[rows], rew[rows]
    row["numpy_memory"] = batches * BATCH / (time.perf_counter() - t)
    del lengths
    # Minari: sample 64 episodes, then slice a window from each (what users do today)
    import minari

    for fmt in ("hdf5", "arrow"):
        dataset = minari.load_dataset(f"{kind}-{fmt}-v0")
        n = max(3, batches // 20)
        t = time.perf_counter()
        for _ in range(n):
            ids = rng.integers(0, dataset.total_episodes, size=BATCH).tolist()
            for episode in dataset.iterate_episodes(ids):  # with replacement, like the others
                end = int(rng.integers(0, len(episode.rewards)))
                lo = max(0, end - WINDOW + 1)
                episode.observations[lo : end + 1], episode.actions[lo : end + 1]
        row[f"minari_{fmt}"] = n * BATCH / (time.perf_counter() - t)
    return row


def bench_append(tmp: Path, cfg: Config) -> dict:
    """Seconds per appended short episode when the dataset holds `small` vs `large` episodes."""
    pool = make_episodes(100, 25, seed=9)
    row: dict = {}
    ws = tmp / "ws-append"

    def append_cost() -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            flexrl_write(ws, "append", pool)  # one commit of 100 episodes
            times.append((time.perf_counter() - t) / len(pool))
        return float(np.median(times))

    grow = make_episodes(1000, 25, seed=10)
    have = 0
    for target, key in ((cfg.append_small, "small"), (cfg.append_large, "large")):
        while have < target:
            chunk = grow[: min(1000, target - have)]
            flexrl_write(ws, "append", chunk)
            have += len(chunk)
        row[f"flexrl_{key}_episodes"] = have
        row[f"flexrl_{key}_s_per_episode"] = append_cost()
        have += 3 * len(pool)
    row["flexrl_ratio"] = row["flexrl_large_s_per_episode"] / row["flexrl_small_s_per_episode"]
    # Minari: append one episode at a time, at `small` and `minari_large` episodes
    for fmt in ("hdf5", "arrow"):
        dataset = minari_create(f"append-{fmt}-v0", make_episodes(cfg.append_small, 25, 11), fmt)
        size = cfg.append_small
        for key, target in (("small", cfg.append_small), ("large", cfg.minari_append_large)):
            while size < target:
                batch = grow[: min(200, target - size)]
                dataset.update_dataset_from_buffer(minari_buffers(batch, size))
                size += len(batch)
            t = time.perf_counter()
            for i in range(20):
                dataset.update_dataset_from_buffer(minari_buffers(pool[i : i + 1], size))
                size += 1
            row[f"minari_{fmt}_{key}_s_per_episode"] = (time.perf_counter() - t) / 20
        row[f"minari_{fmt}_ratio"] = (
            row[f"minari_{fmt}_large_s_per_episode"] / row[f"minari_{fmt}_small_s_per_episode"]
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run (about a minute)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()
    cfg = QUICK if args.quick else DEFAULT
    tmp = Path(tempfile.mkdtemp(prefix="store-bench-"))
    os.environ["MINARI_DATASETS_PATH"] = str(tmp / "minari")
    results: dict = {
        "config": asdict(cfg),
        "quick": args.quick,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    t0 = time.perf_counter()
    try:
        for kind, n, steps in (
            ("long", cfg.long_episodes, 1000),
            ("short", cfg.short_episodes, 25),
        ):
            episodes = make_episodes(n, steps, seed=1)
            results[f"write_{kind}"] = bench_write(tmp, kind, episodes)
            del episodes
            results[f"windows_{kind}"] = bench_windows(tmp, kind, cfg.sample_batches)
        results["append"] = bench_append(tmp, cfg)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - t0
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out} ({results['wall_s']:.0f} s)")


def print_table(r: dict) -> None:
    print(
        f"{'metric':44s} {'flexrl':>12s} {'minari hdf5':>12s} "
        f"{'minari arrow':>12s} {'numpy mem':>12s}"
    )
    for kind in ("long", "short"):
        w, s = r[f"write_{kind}"], r[f"windows_{kind}"]
        print(
            f"{'write steps/s (' + kind + ')':44s} {w['flexrl']:12.0f} {w['minari_hdf5']:12.0f} "
            f"{w['minari_arrow']:12.0f} {'':>12s}"
        )
        print(f"{'  flexrl without fsync (' + kind + ')':44s} {w['flexrl_nofsync']:12.0f}")
        print(
            f"{'bytes on disk MB (' + kind + ')':44s} {w['flexrl_bytes'] / 1e6:12.1f} "
            f"{w['minari_hdf5_bytes'] / 1e6:12.1f} {w['minari_arrow_bytes'] / 1e6:12.1f}"
        )
        print(
            f"{'20-step windows/s, cached (' + kind + ')':44s} {s['flexrl_cached']:12.0f} "
            f"{s['minari_hdf5']:12.0f} {s['minari_arrow']:12.0f} {s['numpy_memory']:12.0f}"
        )
        print(f"{'20-step windows/s, cold reads (' + kind + ')':44s} {s['flexrl_disk']:12.0f}")
    a = r["append"]
    print(
        f"{'append s/episode at ' + str(a['flexrl_small_episodes']) + ' eps':44s} "
        f"{a['flexrl_small_s_per_episode']:12.5f} {a['minari_hdf5_small_s_per_episode']:12.5f} "
        f"{a['minari_arrow_small_s_per_episode']:12.5f}"
    )
    print(
        f"{'append s/episode at large (flexrl ' + str(a['flexrl_large_episodes']) + ')':44s} "
        f"{a['flexrl_large_s_per_episode']:12.5f} {a['minari_hdf5_large_s_per_episode']:12.5f} "
        f"{a['minari_arrow_large_s_per_episode']:12.5f}"
    )
    print(
        f"{'append cost ratio large/small':44s} {a['flexrl_ratio']:12.2f} "
        f"{a['minari_hdf5_ratio']:12.2f} {a['minari_arrow_ratio']:12.2f}"
    )


if __name__ == "__main__":
    main()
