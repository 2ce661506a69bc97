"""PPO speed on Humanoid-v5 (standard reward): raw env.step, flexrl PPO and Stable-Baselines3 PPO.

    .venv/bin/pip install -c constraints.txt -e '.[bench]'
    .venv/bin/python benchmarks/ppo_bench.py [--steps 24576] [--repeats 3] [--num-envs 8]
    .venv/bin/python benchmarks/ppo_bench.py --quick        # a ~1 minute sanity run
    .venv/bin/python benchmarks/ppo_bench.py --learning     # return after 1M steps, 3 seeds

Speed (the default): both learners on CPU with one torch thread, the same gymnasium
`Humanoid-v5` with its standard reward, the same N envs stepped in process (flexrl's
SyncVectorEnv, SB3's DummyVecEnv), the same rollout (N x --num-steps), minibatch count, epochs,
256x256 tanh MLPs for actor and critic, clipped value loss, learning-rate annealing, and running
observation and reward normalisation (flexrl's own, SB3's VecNormalize). Each measurement runs
in a fresh subprocess and is timed end to end (set-up, rollouts and updates), and repetitions
are interleaved (raw, flexrl, SB3, raw, flexrl, SB3, ...) so that other jobs on the machine
slow both alike; the table shows medians and the ratio flexrl / SB3. The raw rate is the
ceiling: random actions, nothing but `env.step` (one env, and N envs in a SyncVectorEnv).
Both learners also run with their envs in worker processes (flexrl's `env.vectorization:
async`, gymnasium's AsyncVectorEnv; SB3's SubprocVecEnv), which spreads env stepping over the
cores; CPU seconds then include the workers'.
Writes benchmarks/results/ppo_bench.json.

Learning (--learning, not part of the default): flexrl's default PPO recipe on Humanoid-v5 for
1M steps, seeds 0, 1, 2; the return is the mean training episodic return over the last 20
updates (as CleanRL reports, whose published PPO figure on Humanoid-v4 is 716) and a
deterministic evaluation of the final policy. Each seed's result is written to
benchmarks/results/ppo_bench_learning.json as soon as it finishes; a rerun skips finished seeds
and resumes an interrupted seed from its last checkpoint (runs live in --workspace).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
ENV_ID = "Humanoid-v5"
CLEANRL_HUMANOID_V4 = 716.0  # CleanRL ppo_continuous_action, Humanoid-v4, 1M steps


# ---------------------------------------------------------------------------------------------
# Workers: each runs in its own subprocess and prints one JSON line.


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def raw_worker(steps: int, num_envs: int, seed: int) -> dict[str, Any]:
    """env.step with random actions: one env, then num_envs in a SyncVectorEnv."""
    import gymnasium as gym
    import numpy as np

    rng = np.random.default_rng(seed)
    env = gym.make(ENV_ID)
    low, high = env.action_space.low, env.action_space.high
    actions = rng.uniform(low, high, (1024, *low.shape)).astype(np.float32)
    env.reset(seed=seed)
    start = time.perf_counter()
    for t in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[t % 1024])
        if terminated or truncated:
            env.reset()
    one = steps / (time.perf_counter() - start)
    env.close()

    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make(ENV_ID) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    batch = rng.uniform(low, high, (1024, num_envs, *low.shape)).astype(np.float32)
    envs.reset(seed=seed)
    iterations = max(1, steps // num_envs)
    start = time.perf_counter()
    for t in range(iterations):
        envs.step(batch[t % 1024])
    many = iterations * num_envs / (time.perf_counter() - start)
    envs.close()
    return {"raw_1": one, "raw_n": many}


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (env worker processes)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def flexrl_worker(
    steps: int,
    num_envs: int,
    num_steps: int,
    minibatches: int,
    epochs: int,
    seed: int,
    vectorization: str = "sync",
) -> dict[str, Any]:
    _one_thread()
    from flexrl.config import TrainRecipe, validate_recipe
    from flexrl.rl import train_ppo
    from flexrl.workspace import Workspace

    recipe = validate_recipe(
        {
            "name": "ppo-bench",
            "seed": seed,
            "torch_threads": 1,
            "env": {
                "id": ENV_ID,
                "num_envs": num_envs,
                "max_episode_steps": 1000,
                "vectorization": vectorization,
            },
            "ppo": {
                "total_steps": steps,
                "num_steps": num_steps,
                "num_minibatches": minibatches,
                "update_epochs": epochs,
                "hidden_sizes": [256, 256],
            },
        },
        TrainRecipe,
    )
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        with ws.start_run("train", "bench", recipe=recipe, seed=seed) as run:
            start, cpu = time.perf_counter(), _cpu_seconds()
            train_ppo(recipe, run, progress=False)
            seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        with open(run.dir / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        taken = int(float(rows[-1]["global_step"]))
    return {"steps": taken, "seconds": seconds, "sps": taken / seconds, "cpu_s": cpu}


def sb3_worker(
    steps: int,
    num_envs: int,
    num_steps: int,
    minibatches: int,
    epochs: int,
    seed: int,
    vectorization: str = "sync",
) -> dict[str, Any]:
    _one_thread()
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize
    from torch import nn

    batch = num_envs * num_steps
    updates = -(-steps // batch)  # as flexrl: at least `steps`, whole rollouts
    start, cpu = time.perf_counter(), _cpu_seconds()
    venv = make_vec_env(
        ENV_ID,
        n_envs=num_envs,
        seed=seed,
        vec_env_cls=SubprocVecEnv if vectorization == "async" else DummyVecEnv,
        vec_env_kwargs={"start_method": "spawn"} if vectorization == "async" else None,
        env_kwargs={"max_episode_steps": 1000},
    )
    venv = VecNormalize(
        venv, norm_obs=True, norm_reward=True, clip_obs=10.0, clip_reward=10.0, gamma=0.99
    )
    model = PPO(
        "MlpPolicy",
        venv,
        learning_rate=lambda progress_remaining: 3e-4 * progress_remaining,  # annealed
        n_steps=num_steps,
        batch_size=batch // minibatches,
        n_epochs=epochs,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        clip_range_vf=0.2,  # flexrl's clip_vloss
        normalize_advantage=True,
        ent_coef=0.0,
        vf_coef=0.5,
        max_grad_norm=0.5,
        policy_kwargs={
            "net_arch": {"pi": [256, 256], "vf": [256, 256]},
            "activation_fn": nn.Tanh,
            "log_std_init": 0.0,
            "ortho_init": True,
        },
        device="cpu",
        seed=seed,
        verbose=0,
    )
    model.learn(total_timesteps=updates * batch, progress_bar=False)
    taken = int(model.num_timesteps)
    venv.close()  # joins the worker processes, so their CPU time is counted
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    return {"steps": taken, "seconds": seconds, "sps": taken / seconds, "cpu_s": cpu}


WORKERS = {"raw": raw_worker, "flexrl": flexrl_worker, "sb3": sb3_worker}


def spawn(kind: str, **kwargs: Any) -> dict[str, Any]:
    """Run one worker in a fresh interpreter (no shared caches, threads or allocator state)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--worker-args", json.dumps(kwargs)],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        sys.exit(f"{kind} worker failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Speed


# (label, worker, vectorization): in-process envs, then envs in worker processes (flexrl's
# AsyncVectorEnv, SB3's SubprocVecEnv); the first two rows are the headline comparison.
VARIANTS = (
    ("flexrl", "flexrl", "sync"),
    ("SB3", "sb3", "sync"),
    ("flexrl async", "flexrl", "async"),
    ("SB3 subproc", "sb3", "async"),
)


def speed(args: argparse.Namespace) -> None:
    common = {
        "num_envs": args.num_envs,
        "num_steps": args.num_steps,
        "minibatches": args.num_minibatches,
        "epochs": args.update_epochs,
    }
    raw: list[dict[str, Any]] = []
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in VARIANTS}
    for rep in range(args.repeats):
        seed = rep
        raw.append(spawn("raw", steps=args.raw_steps, num_envs=args.num_envs, seed=seed))
        for label, kind, vectorization in VARIANTS:
            result = spawn(kind, steps=args.steps, seed=seed, vectorization=vectorization, **common)
            runs[label].append(result)
            print(
                f"  repeat {rep + 1}/{args.repeats} {label:<12} {result['steps']:>7} steps "
                f"{result['seconds']:7.1f} s {result['sps']:6.0f} steps/s "
                f"({result['steps'] / result['cpu_s']:.0f} per CPU-s)",
                flush=True,
            )

    med = statistics.median
    raw_1 = med(r["raw_1"] for r in raw)
    raw_n = med(r["raw_n"] for r in raw)
    sps = {label: med(r["sps"] for r in rs) for label, rs in runs.items()}
    # Steps per CPU-second of the learner and its env workers: what contention from other
    # jobs disturbs least (a process waiting for a core is not charged), a steadier view.
    per_cpu = {label: med(r["steps"] / r["cpu_s"] for r in rs) for label, rs in runs.items()}

    def ratios(a: str, b: str) -> list[float]:
        return [x["sps"] / y["sps"] for x, y in zip(runs[a], runs[b], strict=True)]

    n = args.num_envs
    print()
    print(
        f"{ENV_ID}, {n} envs x {args.num_steps} steps, {args.num_minibatches} minibatches x "
        f"{args.update_epochs} epochs, 256x256 MLPs, 1 torch thread, medians of {args.repeats}"
    )
    print(f"{'what':<52} {'steps/s':>9} {'of raw 1 env':>13} {'steps/CPU-s':>12}")
    rows = [
        ("env.step, random actions, 1 env", raw_1, ""),
        (f"env.step, random actions, {n} envs (SyncVectorEnv)", raw_n, ""),
    ] + [(f"{label} PPO end to end", sps[label], f"{per_cpu[label]:.0f}") for label in sps]
    for what, rate, cpu in rows:
        print(f"{what:<52} {rate:>9.0f} {rate / raw_1:>12.2f}x {cpu:>12}")
    comparisons = {
        "flexrl / SB3 (in-process envs)": ("flexrl", "SB3"),
        "flexrl async / SB3 (each at its default)": ("flexrl async", "SB3"),
        "flexrl async / SB3 subproc (both with env workers)": ("flexrl async", "SB3 subproc"),
    }
    for what, (a, b) in comparisons.items():
        print(
            f"{what}: {sps[a] / sps[b]:.2f}x wall (per repeat "
            f"{', '.join(f'{r:.2f}' for r in ratios(a, b))}), "
            f"{per_cpu[a] / per_cpu[b]:.2f}x per CPU-second"
        )

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "ppo_bench.json"
    out.write_text(
        json.dumps(
            {
                "env": ENV_ID,
                "settings": {
                    **common,
                    "steps": args.steps,
                    "raw_steps": args.raw_steps,
                    "repeats": args.repeats,
                    "hidden_sizes": [256, 256],
                    "torch_threads": 1,
                    "device": "cpu",
                },
                "median_steps_per_s": {"raw_1_env": raw_1, "raw_n_envs": raw_n, **sps},
                "median_steps_per_cpu_s": per_cpu,
                "ratios": {
                    what: {
                        "wall": sps[a] / sps[b],
                        "per_cpu_s": per_cpu[a] / per_cpu[b],
                        "per_repeat": ratios(a, b),
                    }
                    for what, (a, b) in comparisons.items()
                },
                "repeats": {"raw": raw, **runs},
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


# ---------------------------------------------------------------------------------------------
# Learning


def learning(args: argparse.Namespace) -> None:
    """flexrl's default PPO on Humanoid-v5 for --learning-steps, per seed, resumable."""
    import numpy as np

    from flexrl.config import TrainRecipe, validate_recipe
    from flexrl.rl import train_ppo
    from flexrl.workspace import Workspace
    from flexrl.workspace.records import ArtifactKind, RunStatus

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "ppo_bench_learning.json"
    done: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    per_seed = done.setdefault("seeds", {})
    ws = Workspace(Path(args.workspace))

    for seed in args.seeds:
        if str(seed) in per_seed and per_seed[str(seed)]["steps"] >= args.learning_steps:
            print(f"seed {seed}: done earlier, return {per_seed[str(seed)]['train_return']:.1f}")
            continue
        recipe = validate_recipe(
            {
                "name": f"humanoid-v5-seed{seed}",
                "seed": seed,
                "env": {"id": ENV_ID, "num_envs": args.num_envs, "max_episode_steps": 1000},
                "ppo": {"total_steps": args.learning_steps},
            },
            TrainRecipe,
        )
        # An interrupted earlier attempt of this seed (same recipe) is resumed, not restarted.
        previous = None
        for record in ws.list_runs():
            if (
                record.name == recipe.name
                and record.status in (RunStatus.INTERRUPTED, RunStatus.FAILED, RunStatus.LOST)
                and any(a.kind == ArtifactKind.CHECKPOINT for a in record.outputs)
            ):
                previous = record  # list_runs is oldest first: keep the newest
        print(
            f"seed {seed}: training {args.learning_steps} steps"
            + (f" (resuming {previous.id})" if previous else ""),
            flush=True,
        )
        start = time.perf_counter()
        with ws.start_run("train", recipe.name, recipe=recipe, seed=seed) as run:
            train_ppo(recipe, run, resume_from=previous, progress=True)
        seconds = time.perf_counter() - start

        with open(run.dir / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        returns = [float(r["episodic_return"]) for r in rows if r.get("episodic_return")]
        train_return = float(np.mean(returns[-20:]))
        eval_return = evaluate(run.dir / "artifacts" / "final.pt", seed, args.eval_episodes)
        per_seed[str(seed)] = {
            "run": run.id,
            "steps": int(float(rows[-1]["global_step"])),
            "train_return": train_return,
            "eval_return_deterministic": eval_return,
            "seconds": seconds,
        }
        # Seeds may run side by side in separate processes: merge with what they wrote.
        if out.exists():
            per_seed.update({k: v for k, v in json.loads(out.read_text())["seeds"].items()
                             if k != str(seed)})  # fmt: skip
        finished = [v["train_return"] for v in per_seed.values()]
        done.update(
            {
                "env": ENV_ID,
                "steps": args.learning_steps,
                "mean_train_return": float(np.mean(finished)),
                "std_train_return": float(np.std(finished)),
                "cleanrl_humanoid_v4": CLEANRL_HUMANOID_V4,
            }
        )
        out.write_text(json.dumps(done, indent=2))  # after every seed: an interruption keeps it
        print(f"seed {seed}: train return {train_return:.1f}, eval {eval_return:.1f}", flush=True)

    finished = {s: v["train_return"] for s, v in per_seed.items()}
    print(f"\n{ENV_ID}, {args.learning_steps} steps, flexrl PPO (default recipe)")
    print(f"{'seed':<6} {'train return':>13} {'eval return':>12}")
    for s, v in sorted(per_seed.items()):
        print(f"{s:<6} {v['train_return']:>13.1f} {v['eval_return_deterministic']:>12.1f}")
    values = list(finished.values())
    print(
        f"mean {np.mean(values):.1f} +- {np.std(values):.1f} over {len(values)} seeds "
        f"(CleanRL PPO, Humanoid-v4: {CLEANRL_HUMANOID_V4:.0f})"
    )
    print(f"wrote {out}")


def evaluate(checkpoint: Path, seed: int, episodes: int) -> float:
    """Mean return of the final policy acting deterministically (the Gaussian mean)."""
    import gymnasium as gym
    import numpy as np

    from flexrl.rl import load_policy

    policy = load_policy(checkpoint)
    env = gym.make(ENV_ID, max_episode_steps=1000)
    totals = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 + 100 * seed + episode)
        total, finished = 0.0, False
        while not finished:
            obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
            total += float(reward)
            finished = terminated or truncated
        totals.append(total)
    env.close()
    return float(np.mean(totals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24_576, help="env steps per learner run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=256, help="rollout length per env")
    parser.add_argument("--num-minibatches", type=int, default=32)
    parser.add_argument("--update-epochs", type=int, default=10)
    parser.add_argument("--raw-steps", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="a ~1 minute sanity run")
    parser.add_argument(
        "--learning",
        action="store_true",
        help="return after --learning-steps for flexrl, per seed (long)",
    )
    parser.add_argument("--learning-steps", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--workspace", default=str(RESULTS / "ppo_learning_workspace"))
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(WORKERS[args.worker](**json.loads(args.worker_args))))
        return
    if args.learning:
        learning(args)
        return
    if args.quick:
        args.steps, args.repeats, args.raw_steps = 4096, 1, 2000
    speed(args)


if __name__ == "__main__":
    main()
