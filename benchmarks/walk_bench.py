"""The walking recipe's speed: ways to step 64 Humanoid envs, and PPO end to end against SB3.

    .venv/bin/pip install -c constraints.txt -e '.[bench]'
    .venv/bin/python benchmarks/walk_bench.py [--repeats 3] [--steps 262144]
    .venv/bin/python benchmarks/walk_bench.py --quick          # a ~2 minute sanity run

Vectorisation (env steps only, random actions in [-0.4, 0.4], `flexrl/HumanoidWalk-v0`, 64
envs): one env's `env.step` (the raw simulator rate a learner is measured against); gymnasium's
SyncVectorEnv; flexrl's HumanoidVectorEnv (physics on a thread per core); the envs split over
two processes with one pipe round trip per step; gymnasium's AsyncVectorEnv with shared memory
(a process per env); and MuJoCo's threaded `rollout` stepping the bare model (no observation,
reward or reset: the ceiling of the physics alone on two threads).

End to end: flexrl's `recipes/humanoid_walk_forward.yaml` (64 envs x 64 steps, 4 minibatches x
2 epochs, 64x64 tanh MLPs) against Stable-Baselines3 PPO configured the same way (same env id
and reward, envs, rollout, minibatches, epochs, network, annealed learning rate, observation
normalisation) with DummyVecEnv and with SubprocVecEnv. Each measurement runs in a fresh
subprocess, timed end to end; repetitions interleave the variants so other load slows all
alike; the table shows medians. Writes benchmarks/results/walk_bench.json.

Time to walk (--time-to-walk, long: 2 x --minutes): flexrl's walking recipe and SB3 PPO with
rl-baselines3-zoo's Humanoid hyperparameters (1 env x 512 steps, batch 256, 5 epochs, lr
3.6e-5, gamma 0.95, 256x256 ReLU, log-std -2, VecNormalize), both on the same env, reward and
observation (`flexrl/HumanoidWalk-v0` as the recipe's env section configures it: its command,
shaped reward and heading-frame observation), each given the same wall time here, then
evaluated alike in that env:
--episodes deterministic episodes of walk_forward with eval seeds, forward speed and fall rate
(flexrl.rollout, as `flexrl eval` runs them). Each side's result is written when it finishes;
a rerun skips it. --workspace keeps flexrl's run (named time-to-walk) there instead of in a
temporary directory; --reuse evaluates the run already there instead of training again.
Writes benchmarks/results/walk_bench_time_to_walk.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPE = ROOT / "recipes" / "humanoid_walk_forward.yaml"
ENV_ID = "flexrl/HumanoidWalk-v0"
IMPORTING_ID = f"flexrl.envs:{ENV_ID}"  # gymnasium imports the module first: for subprocesses
NUM_ENVS = 64


def _setup() -> None:
    import torch

    torch.set_num_threads(1)
    import flexrl.envs  # noqa: F401  registers the ids


def _actions(seed: int, n: int) -> Any:
    import numpy as np

    return np.random.default_rng(seed).uniform(-0.4, 0.4, (256, n, 17))


def _rate(step: Any, actions: Any, seconds: float, n: int) -> float:
    """Steps per second of `step(actions[t])`, over at least `seconds` (after a warm-up)."""
    for t in range(8):
        step(actions[t])
    start, t = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step(actions[t % len(actions)])
        t += 1
    return t * n / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# Vectorisation options: each a worker in its own interpreter, returning steps/s.


def vector_worker(kind: str, seconds: float, seed: int) -> dict[str, Any]:
    _setup()
    import gymnasium as gym

    from flexrl.config import EnvConfig
    from flexrl.rl.envs import make_vector_env

    if kind == "single":
        env = gym.make(ENV_ID)
        env.reset(seed=seed)

        def step(a: Any) -> None:
            _, _, terminated, truncated, _ = env.step(a[0])
            if terminated or truncated:
                env.reset()

        return {"sps": _rate(step, _actions(seed, 1), seconds, 1)}
    if kind == "rollout":
        return {"sps": _rollout_rate(seconds, seed)}
    if kind == "two_processes":
        return {"sps": _two_process_rate(seconds, seed)}
    mode = {"sync": "sync", "threads": "threads", "async": "async"}[kind]
    envs = make_vector_env(EnvConfig(num_envs=NUM_ENVS, vectorization=mode))
    envs.reset(seed=seed)
    rate = _rate(envs.step, _actions(seed, NUM_ENVS), seconds, NUM_ENVS)
    envs.close()
    return {"sps": rate}


def _rollout_rate(seconds: float, seed: int) -> float:
    """mujoco.rollout on 2 threads, one 5-substep control interval per call (as a learner
    must call it: the policy needs each observation before the next action)."""
    import mujoco
    import numpy as np
    from mujoco import rollout

    env = __import__("gymnasium").make(ENV_ID).unwrapped
    model = env.model
    datas = [mujoco.MjData(model) for _ in range(2)]
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    state = np.empty((NUM_ENVS, mujoco.mj_stateSize(model, spec)))
    env.reset(seed=seed)
    mujoco.mj_getState(model, env.data, state[0], spec)
    initial = state[0].copy()
    state[:] = initial
    runner = rollout.Rollout(nthread=2)
    actions = _actions(seed, NUM_ENVS)

    def step(a: Any) -> None:
        nonlocal state
        out, _ = runner.rollout(model, datas, state, np.repeat(a[:, None, :], 5, axis=1), nstep=5)
        state = out[:, -1]
        fallen = state[:, 1 + 2] < 1.0  # time, then qpos: qpos[2] is the torso height
        state[fallen] = initial  # a fall restarts from the initial pose, as a reset would

    rate = _rate(step, actions, seconds, NUM_ENVS)
    runner.close()
    return rate


def _half_worker(conn: Any, seed: int, n: int) -> None:
    _setup()
    from flexrl.config import EnvConfig
    from flexrl.rl.envs import make_vector_env

    envs = make_vector_env(EnvConfig(num_envs=n, vectorization="threads", sim_threads=1))
    envs.reset(seed=seed)
    while (actions := conn.recv()) is not None:
        conn.send(envs.step(actions)[:4])


def _two_process_rate(seconds: float, seed: int) -> float:
    """Half the envs in each of two processes (one thread each), one pipe round trip per step
    and half."""
    import multiprocessing as mp

    import numpy as np

    ctx = mp.get_context("spawn")
    half = NUM_ENVS // 2
    pipes, procs = [], []
    for i in range(2):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_half_worker, args=(child, seed + i * half, half), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)

    def step(a: Any) -> None:
        for i, pipe in enumerate(pipes):
            pipe.send(a[i * half : (i + 1) * half])
        np.concatenate([pipe.recv()[0] for pipe in pipes])

    rate = _rate(step, _actions(seed, NUM_ENVS), seconds, NUM_ENVS)
    for pipe in pipes:
        pipe.send(None)
    for proc in procs:
        proc.join()
    return rate


# ---------------------------------------------------------------------------------------------
# PPO end to end


def flexrl_worker(steps: int, seed: int) -> dict[str, Any]:
    _setup()
    from flexrl.config import TrainRecipe, load_recipe
    from flexrl.rl import train_ppo
    from flexrl.workspace import Workspace

    recipe = load_recipe(RECIPE, TrainRecipe, [f"ppo.total_steps={steps}", f"seed={seed}"])
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        with ws.start_run("train", "bench", recipe=recipe, seed=seed) as run:
            start = time.perf_counter()
            train_ppo(recipe, run, progress=False)
            seconds = time.perf_counter() - start
        taken = int(run.record.metrics_last["global_step"])
    return {"steps": taken, "seconds": seconds, "sps": taken / seconds}


def sb3_worker(steps: int, seed: int, subproc: bool) -> dict[str, Any]:
    _setup()
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize
    from torch import nn

    from flexrl.config import TrainRecipe, load_recipe

    recipe = load_recipe(RECIPE, TrainRecipe)
    ppo = recipe.ppo
    batch = NUM_ENVS * ppo.num_steps
    updates = -(-steps // batch)
    start = time.perf_counter()
    venv = make_vec_env(
        IMPORTING_ID,
        n_envs=NUM_ENVS,
        seed=seed,
        vec_env_cls=SubprocVecEnv if subproc else DummyVecEnv,
        vec_env_kwargs={"start_method": "spawn"} if subproc else None,
        env_kwargs={"max_episode_steps": 1000},
    )
    venv = VecNormalize(venv, norm_obs=True, norm_reward=False, clip_obs=10.0, gamma=ppo.gamma)
    model = PPO(
        "MlpPolicy",
        venv,
        learning_rate=lambda remaining: ppo.learning_rate * remaining,
        n_steps=ppo.num_steps,
        batch_size=batch // ppo.num_minibatches,
        n_epochs=ppo.update_epochs,
        gamma=ppo.gamma,
        gae_lambda=ppo.gae_lambda,
        clip_range=ppo.clip_coef,
        normalize_advantage=True,
        ent_coef=ppo.ent_coef,
        vf_coef=ppo.vf_coef,
        max_grad_norm=ppo.max_grad_norm,
        policy_kwargs={
            "net_arch": {"pi": ppo.hidden_sizes, "vf": ppo.hidden_sizes},
            "activation_fn": nn.Tanh,
            "log_std_init": 0.0,
        },
        device="cpu",
        seed=seed,
        verbose=0,
    )
    model.learn(total_timesteps=updates * batch, progress_bar=False)
    taken = int(model.num_timesteps)
    venv.close()
    seconds = time.perf_counter() - start
    return {"steps": taken, "seconds": seconds, "sps": taken / seconds}


# ---------------------------------------------------------------------------------------------
# Time to walk: equal wall time, then the same evaluation


class _SB3Actor:
    """An SB3 PPO model (with its VecNormalize statistics) as a flexrl rollout Actor."""

    def __init__(self, model: Any, normalizer: Any) -> None:
        self.model, self.normalizer = model, normalizer

    def reset(self, slot: int) -> None:
        pass

    def act(self, slots: Any, obs: Any, goals: Any, rngs: Any) -> Any:
        action, _ = self.model.predict(self.normalizer.normalize_obs(obs), deterministic=True)
        return action

    def observe(self, slots: Any, rewards: Any) -> None:
        pass


def recipe_env() -> Any:
    """The walking recipe's env (task, command, shaped reward, heading-frame observation):
    what both learners train on and are evaluated in."""
    from flexrl.config import TrainRecipe, load_recipe

    return load_recipe(RECIPE, TrainRecipe).env.model_copy(update={"max_episode_steps": 1000})


def _walk_eval(make_actor: Any, episodes: int) -> dict[str, Any]:
    """`episodes` deterministic walk_forward episodes of the recipe's env through flexrl's
    rollout loop (as `flexrl eval` runs them); `make_actor(action_space)` gives the actor."""
    from flexrl.evaluation import episode_seeds
    from flexrl.rollout.loop import EpisodeSpec, rollout
    from flexrl.rollout.metrics import TaskMetrics
    from flexrl.rollout.slots import EnvSlots

    slots = EnvSlots(recipe_env(), min(episodes, 16))
    specs = [EpisodeSpec(k, s, "walk_forward") for k, s in enumerate(episode_seeds(1, episodes))]
    try:
        results = [r.result for r in rollout(slots, make_actor(slots.action_space), specs)]
    finally:
        slots.close()
    metrics = TaskMetrics.from_episodes("walk_forward", results)
    return {k: getattr(metrics, k) for k in ("forward_speed", "fall_rate", "length_mean",
                                             "lin_vel_error", "distance")}  # fmt: skip


def flexrl_walk_worker(
    minutes: float, episodes: int, workspace: str, reuse: bool = False
) -> dict[str, Any]:
    """The recipe trained for `minutes` of wall time (then stopped as a user would, with
    SIGTERM: the run keeps its last update boundary), evaluated. With `reuse`, the latest
    time-to-walk run already in `workspace` is evaluated instead."""
    import signal

    _setup()
    command = [sys.executable, "-m", "flexrl", "train", "--config", str(RECIPE),
               "--name", "time-to-walk", "--workspace", workspace]  # fmt: skip
    if not reuse:
        process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            process.wait()
    from flexrl.rl.checkpoint import load_checkpoint, load_policy, run_checkpoint
    from flexrl.rollout.actors import PPOActor
    from flexrl.workspace import Workspace

    ws = Workspace(workspace)
    record = ws.resolve_run("time-to-walk")  # its latest run of that name
    path, _ = run_checkpoint(ws, record)
    steps = int(load_checkpoint(path)["global_step"])
    policy = load_policy(path)
    return {"steps": steps, **_walk_eval(lambda space: PPOActor(policy, space), episodes)}


def sb3_walk_worker(minutes: float, episodes: int, workspace: str) -> dict[str, Any]:
    """rl-baselines3-zoo's Humanoid PPO (hyperparams/ppo.yml, Humanoid-v3) for `minutes`."""
    _setup()
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize
    from torch import nn

    deadline = time.monotonic() + minutes * 60

    class Deadline(BaseCallback):
        def _on_step(self) -> bool:
            return time.monotonic() < deadline

    from flexrl.envs import humanoid_kwargs

    env = recipe_env()  # the same env, reward and observation as flexrl's recipe
    kwargs = {**humanoid_kwargs(env), "max_episode_steps": env.max_episode_steps}
    venv = make_vec_env(IMPORTING_ID, n_envs=1, seed=0, env_kwargs=kwargs)
    venv = VecNormalize(venv, gamma=0.95)
    model = PPO(
        "MlpPolicy", venv, n_steps=512, batch_size=256, gamma=0.95, learning_rate=3.56987e-05,
        ent_coef=0.00238306, clip_range=0.3, n_epochs=5, gae_lambda=0.9, max_grad_norm=2,
        vf_coef=0.431892, device="cpu", seed=0, verbose=0,
        policy_kwargs={"log_std_init": -2, "ortho_init": False, "activation_fn": nn.ReLU,
                       "net_arch": {"pi": [256, 256], "vf": [256, 256]}},
    )  # fmt: skip
    model.learn(total_timesteps=10**9, callback=Deadline())
    steps = int(model.num_timesteps)
    venv.training = False
    return {"steps": steps, **_walk_eval(lambda _space: _SB3Actor(model, venv), episodes)}


def time_to_walk(args: argparse.Namespace) -> None:
    out = RESULTS / "walk_bench_time_to_walk.json"
    RESULTS.mkdir(exist_ok=True)
    done: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    for label, worker in (("flexrl", "flexrl_walk"), ("SB3 rl-zoo", "sb3_walk")):
        if label in done.get("results", {}):
            continue
        print(f"{label}: training for {args.minutes:g} minutes ...", flush=True)
        workspace = str(args.workspace or tempfile.mkdtemp(prefix="walk-bench-"))
        extra = {"reuse": True} if args.reuse and worker == "flexrl_walk" else {}
        result = spawn(worker, minutes=args.minutes, episodes=args.episodes, workspace=workspace,
                       **extra)  # fmt: skip
        done.setdefault("results", {})[label] = result
        done.update(minutes=args.minutes, episodes=args.episodes, env=ENV_ID,
                    timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"))  # fmt: skip
        out.write_text(json.dumps(done, indent=2))
    print(f"\n{ENV_ID}, {done['minutes']:g} minutes of wall time each, "
          f"{done['episodes']} deterministic eval episodes")  # fmt: skip
    print(f"{'learner':<12} {'env steps':>10} {'speed m/s':>10} {'fall rate':>10}")
    for label, r in done["results"].items():
        print(f"{label:<12} {r['steps']:>10,} {r['forward_speed']:>10.2f} {r['fall_rate']:>10.0%}")
    print(f"wrote {out}")


WORKERS = {
    "vector": vector_worker,
    "flexrl": flexrl_worker,
    "sb3": sb3_worker,
    "flexrl_walk": flexrl_walk_worker,
    "sb3_walk": sb3_walk_worker,
}


def spawn(worker: str, **kwargs: Any) -> dict[str, Any]:
    """One worker in a fresh interpreter (no shared caches, threads or allocator state)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", worker, "--worker-args", json.dumps(kwargs)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if out.returncode != 0:
        sys.exit(f"{worker} worker failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


VECTOR_KINDS = {
    "single": "env.step, 1 env (the raw simulator rate)",
    "sync": "gymnasium SyncVectorEnv",
    "threads": "flexrl HumanoidVectorEnv, physics on 2 threads",
    "two_processes": "2 processes x 32 envs, a pipe round trip per step",
    "async": "gymnasium AsyncVectorEnv, shared memory, 64 processes",
    "rollout": "mujoco.rollout, 2 threads, bare physics (ceiling)",
}
# name -> (worker, its arguments, share of --steps): SB3's SubprocVecEnv runs a process per env
# (64 on 2 cores), ~10x slower than its DummyVecEnv here, so it gets an eighth of the steps.
LEARNERS = {
    "flexrl": ("flexrl", {}, 1),
    "SB3 DummyVecEnv": ("sb3", {"subproc": False}, 1),
    "SB3 SubprocVecEnv": ("sb3", {"subproc": True}, 8),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=262_144, help="env steps per learner run")
    parser.add_argument("--seconds", type=float, default=15.0, help="per vectorisation option")
    parser.add_argument("--quick", action="store_true", help="a ~2 minute sanity run")
    parser.add_argument("--time-to-walk", action="store_true", help="equal wall time (long)")
    parser.add_argument("--minutes", type=float, default=60.0, help="with --time-to-walk")
    parser.add_argument("--episodes", type=int, default=20, help="with --time-to-walk")
    parser.add_argument(
        "--workspace", type=Path, help="--time-to-walk: keep flexrl's run here (not a temp dir)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="--time-to-walk: evaluate the run in --workspace"
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](**json.loads(args.worker_args))))
        return
    if args.time_to_walk:
        time_to_walk(args)
        return
    if args.quick:
        args.repeats, args.steps, args.seconds = 1, 16_384, 3.0

    vector: dict[str, list[float]] = {k: [] for k in VECTOR_KINDS}
    learners: dict[str, list[dict[str, Any]]] = {k: [] for k in LEARNERS}
    for rep in range(args.repeats):
        for kind in VECTOR_KINDS:
            sps = spawn("vector", kind=kind, seconds=args.seconds, seed=rep)["sps"]
            vector[kind].append(sps)
            print(f"  repeat {rep + 1}: {kind:<14} {sps:8.0f} env steps/s", flush=True)
        for label, (worker, extra, share) in LEARNERS.items():
            result = spawn(worker, steps=max(args.steps // share, 8192), seed=rep, **extra)
            learners[label].append(result)
            print(
                f"  repeat {rep + 1}: {label:<18} {result['steps']} steps in "
                f"{result['seconds']:.1f} s = {result['sps']:.0f} steps/s",
                flush=True,
            )

    med = statistics.median
    single = med(vector["single"])
    env_rates = {k: med(v) for k, v in vector.items()}
    ppo_rates = {k: med(r["sps"] for r in v) for k, v in learners.items()}
    best_sb3 = max((k for k in ppo_rates if k.startswith("SB3")), key=ppo_rates.get)
    print(f"\n{NUM_ENVS} envs of {ENV_ID}, medians of {args.repeats}")
    print(f"{'env stepping':<58} {'steps/s':>9} {'x 1 env':>8}")
    for kind, what in VECTOR_KINDS.items():
        print(f"{what:<58} {env_rates[kind]:>9.0f} {env_rates[kind] / single:>7.2f}x")
    print(f"\n{'PPO end to end (' + RECIPE.name + ')':<58} {'steps/s':>9} {'x 1 env':>8}")
    for label, rate in ppo_rates.items():
        print(f"{label:<58} {rate:>9.0f} {rate / single:>7.2f}x")
    versus_sb3 = ppo_rates["flexrl"] / ppo_rates[best_sb3]
    versus_raw = ppo_rates["flexrl"] / single
    print(f"flexrl / {best_sb3} (SB3's best): {versus_sb3:.2f}x")
    print(f"flexrl / one env's env.step: {versus_raw:.2f}x")

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "walk_bench.json"
    out.write_text(
        json.dumps(
            {
                "env": ENV_ID,
                "num_envs": NUM_ENVS,
                "recipe": str(RECIPE.relative_to(ROOT)),
                "settings": vars(args),
                "median_env_steps_per_s": env_rates,
                "median_ppo_steps_per_s": ppo_rates,
                "flexrl_over_best_sb3": versus_sb3,
                "best_sb3": best_sb3,
                "flexrl_over_single_env_step": versus_raw,
                "repeats": {"vector": vector, "ppo": learners},
                "cpus": os.cpu_count(),
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
