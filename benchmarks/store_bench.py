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
import resource
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
    repeats: int  # interleaved repeats of the flexrl / HDF5 / numpy measurements (medians)
    arrow_short_episodes: int  # Minari Arrow writes (and is read back from) this many at most


DEFAULT = Config(60, 2400, 200, 20_000, 2_000, 500, 3, 600)
QUICK = Config(12, 400, 200, 2_000, 600, 100, 2, 200)


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


def bench_write(
    tmp: Path, kind: str, episodes: list[dict], repeats: int, arrow_episodes: int
) -> dict:
    """Steps/s writing `episodes` as one dataset. flexrl (durable and not) and Minari HDF5 are
    run `repeats` times, interleaved (the machine is shared), and the median is reported;
    Minari Arrow once (it is the slow one and not a target)."""
    steps = sum(len(e["actions"]) for e in episodes)
    runs: dict[str, list[float]] = {"flexrl": [], "flexrl_nofsync": [], "minari_hdf5": []}
    row: dict = {}
    cpu: dict[str, list[float]] = {key: [] for key in runs}
    for i in range(repeats):
        for key in runs:
            c = process_cpu()
            t = time.perf_counter()
            if key == "minari_hdf5":
                minari_create(f"{kind}-hdf5-{i}-v0", episodes, "hdf5")
            else:
                # Minari never fsyncs; flexrl_nofsync is flexrl with that same guarantee
                flexrl_write(tmp / f"ws-{key}-{i}", kind, episodes, durable=key == "flexrl")
            runs[key].append(steps / (time.perf_counter() - t))
            cpu[key].append(process_cpu() - c)
    for key, values in runs.items():
        row[key] = float(np.median(values))
        row[key + "_runs"] = values
        row[key + "_cpu_s"] = float(np.median(cpu[key]))  # all threads, user + system
    row["flexrl_bytes"] = du(tmp / "ws-flexrl-0/datasets" / kind)
    row["minari_hdf5_bytes"] = du(tmp / "minari" / f"{kind}-hdf5-0-v0")
    for i in range(repeats):  # keep one copy of each for the read benchmarks
        if i:
            shutil.rmtree(tmp / f"ws-flexrl-{i}", ignore_errors=True)
            shutil.rmtree(tmp / "minari" / f"{kind}-hdf5-{i}-v0", ignore_errors=True)
        shutil.rmtree(tmp / f"ws-flexrl_nofsync-{i}", ignore_errors=True)
    # Minari Arrow writes a few hundred steps/s on short episodes: it gets at most
    # `arrow_episodes` of them (steps/s and bytes per step scaled to the full set, stated in the
    # table) so the run stays within a few minutes.
    subset = episodes[:arrow_episodes]
    sub_steps = sum(len(e["actions"]) for e in subset)
    t = time.perf_counter()
    minari_create(f"{kind}-arrow-v0", subset, "arrow")
    row["minari_arrow"] = sub_steps / (time.perf_counter() - t)
    row["minari_arrow_episodes"] = len(subset)
    row["minari_arrow_bytes"] = du(tmp / "minari" / f"{kind}-arrow-v0") * steps / sub_steps
    return row


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def numpy_windows(arrays: tuple, starts: np.ndarray, rng, batches: int) -> float:
    """The in-memory baseline: the same window arithmetic over numpy arrays (no padding, mask
    or returns-to-go, so it does less than a WindowBatch)."""
    obs, act, rew = arrays
    t = time.perf_counter()
    for _ in range(batches):
        ends = rng.integers(0, len(rew), size=BATCH)
        ep = np.searchsorted(starts, ends, side="right") - 1
        rows = np.maximum(ends[:, None] + np.arange(-WINDOW + 1, 1), starts[ep][:, None])
        obs[rows], act[rows], rew[rows]
    return batches * BATCH / (time.perf_counter() - t)


def bench_windows(tmp: Path, kind: str, batches: int, repeats: int) -> dict:
    ds = open_dataset(kind, tmp / "ws-flexrl-0")
    rng = np.random.default_rng(0)
    row: dict = {}
    arrays = (ds.array("observations"), ds.array("actions"), ds.array("rewards"))
    runs: dict[str, list[float]] = {"flexrl_cached": [], "numpy_memory": [], "load_s": []}
    for i in range(repeats):  # interleaved with the numpy baseline; medians reported
        # From disk (page cache): a fresh sampler reads every chunk once, digest-checked and
        # decoded in parallel (load_s), then serves windows from memory.
        t = time.perf_counter()
        sampler = WindowSampler(ds, WINDOW, seed=i)
        assert sampler.preload()
        runs["load_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(batches):
            sampler.sample(BATCH)
        runs["flexrl_cached"].append(batches * BATCH / (time.perf_counter() - t))
        runs["numpy_memory"].append(numpy_windows(arrays, ds.episode_starts, rng, batches))
    for key, values in runs.items():
        row[key] = float(np.median(values))
        row[key + "_runs"] = values
    # The first `batches` batches of a fresh sampler without preload: chunks are read (and
    # checked) from disk as windows first need them, load included in the rate.
    t = time.perf_counter()
    sampler = WindowSampler(ds, WINDOW, seed=99)
    for _ in range(batches):
        sampler.sample(BATCH)
    row["flexrl_first_pass"] = batches * BATCH / (time.perf_counter() - t)
    # flexrl, cold each batch: a fresh sampler with a small cache (every window read from disk)
    t = time.perf_counter()
    n = max(5, batches // 10)
    for i in range(n):
        WindowSampler(ds, WINDOW, seed=i, cache_bytes=32 << 20).sample(BATCH)
    row["flexrl_disk"] = n * BATCH / (time.perf_counter() - t)
    # Minari: sample 64 episodes, then slice a window from each (what users do today)
    import minari

    for fmt in ("hdf5", "arrow"):
        dataset = minari.load_dataset(f"{kind}-{fmt}-0-v0" if fmt == "hdf5" else f"{kind}-{fmt}-v0")
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

    grow = make_episodes(1000, 25, seed=10)
    sizes = {"small": cfg.append_small, "large": cfg.append_large}
    for key, target in sizes.items():  # one dataset of each size
        have = 0
        while have < target:
            chunk = grow[: min(1000, target - have)]
            flexrl_write(tmp / f"ws-append-{key}", "append", chunk)
            have += len(chunk)
        row[f"flexrl_{key}_episodes"] = have
    # Then one commit of 100 episodes into each, alternately (the machine is shared), on a
    # fresh copy of the small dataset each time so it stays at `small` episodes; medians.
    times: dict[str, list[float]] = {"small": [], "large": []}
    for i in range(max(3, cfg.repeats)):
        for key in sizes:
            ws = tmp / f"ws-append-{key}"
            if key == "small":
                ws = tmp / f"ws-append-small-{i}"
                shutil.copytree(tmp / "ws-append-small", ws)
            t = time.perf_counter()
            flexrl_write(ws, "append", pool)  # one commit of 100 episodes
            times[key].append((time.perf_counter() - t) / len(pool))
    for key, values in times.items():
        row[f"flexrl_{key}_s_per_episode"] = float(np.median(values))
        row[f"flexrl_{key}_s_per_episode_runs"] = values
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
            results[f"write_{kind}"] = bench_write(
                tmp, kind, episodes, cfg.repeats, cfg.arrow_short_episodes
            )
            del episodes
            results[f"windows_{kind}"] = bench_windows(tmp, kind, cfg.sample_batches, cfg.repeats)
        results["append"] = bench_append(tmp, cfg)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - t0
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out} ({results['wall_s']:.0f} s)")


def print_table(r: dict) -> None:
    def line(label: str, *cells: str) -> None:
        print(f"{label:48s}" + "".join(f"{c:>13s}" for c in cells))

    def n(x: float) -> str:
        return f"{x:,.0f}"

    line("metric", "flexrl", "minari hdf5", "minari arrow", "numpy mem")
    for kind in ("long", "short"):
        w, s = r[f"write_{kind}"], r[f"windows_{kind}"]
        line(
            f"write steps/s ({kind}), durable (fsync, default)",
            n(w["flexrl"]),
            n(w["minari_hdf5"]),
            n(w["minari_arrow"]),
        )
        line("  flexrl durable=False (as Minari: no fsync)", n(w["flexrl_nofsync"]))
        line(
            "  process CPU s (flexrl durable, hdf5)",
            f"{w['flexrl_cpu_s']:.3f}",
            f"{w['minari_hdf5_cpu_s']:.3f}",
        )
        line(
            "  flexrl / HDF5 (durable, non-durable)",
            f"{w['flexrl'] / w['minari_hdf5']:.2f}x",
            f"{w['flexrl_nofsync'] / w['minari_hdf5']:.2f}x",
        )
        if w["minari_arrow_episodes"] < (r["config"][f"{kind}_episodes"]):
            line(f"  (minari arrow: {w['minari_arrow_episodes']} episodes, bytes scaled)")
        line(
            f"bytes on disk MB ({kind})",
            f"{w['flexrl_bytes'] / 1e6:.1f}",
            f"{w['minari_hdf5_bytes'] / 1e6:.1f}",
            f"{w['minari_arrow_bytes'] / 1e6:.1f}",
        )
        line(
            f"20-step windows/s, page cache ({kind})",
            n(s["flexrl_cached"]),
            n(s["minari_hdf5"]),
            n(s["minari_arrow"]),
            n(s["numpy_memory"]),
        )
        line(
            "  flexrl / numpy, flexrl / best Minari",
            f"{s['flexrl_cached'] / s['numpy_memory']:.2f}x",
            f"{s['flexrl_cached'] / max(s['minari_hdf5'], s['minari_arrow']):.0f}x",
        )
        line("  one-time verified load (preload) s", f"{s['load_s']:.3f}")
        line("  first pass, loading as needed (windows/s)", n(s["flexrl_first_pass"]))
        line("  cold: fresh 32 MiB cache per batch (windows/s)", n(s["flexrl_disk"]))
    a = r["append"]
    line(
        f"append s/episode at {a['flexrl_small_episodes']} eps",
        f"{a['flexrl_small_s_per_episode']:.5f}",
        f"{a['minari_hdf5_small_s_per_episode']:.5f}",
        f"{a['minari_arrow_small_s_per_episode']:.5f}",
    )
    line(
        f"append s/episode at large (flexrl {a['flexrl_large_episodes']})",
        f"{a['flexrl_large_s_per_episode']:.5f}",
        f"{a['minari_hdf5_large_s_per_episode']:.5f}",
        f"{a['minari_arrow_large_s_per_episode']:.5f}",
    )
    line(
        "append cost ratio large/small",
        f"{a['flexrl_ratio']:.2f}",
        f"{a['minari_hdf5_ratio']:.2f}",
        f"{a['minari_arrow_ratio']:.2f}",
    )


if __name__ == "__main__":
    main()
