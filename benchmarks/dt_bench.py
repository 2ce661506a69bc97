"""Decision Transformer training speed: flexrl's DT against transformers.DecisionTransformerModel.

    .venv/bin/python benchmarks/dt_bench.py [--episodes 300] [--steps 40] [--repeats 7] [--quick]

`--quick` (about a minute) uses fewer episodes, steps and repeats.

Writes a synthetic Humanoid-shaped dataset with the store's ShardWriter into a temp workspace
(observations 351 float32 whose last 3 values are the goal command, as in
flexrl.envs.humanoid; a separate 3-dim `goals` array, as `flexrl collect` writes it; actions
17 in [-1, 1]; episodes of random lengths up to 1000 steps), builds the DT exactly as
`flexrl finetune dt` does (`flexrl.offline.training.build` with the default recipe: K=20,
128 dims, 3 layers, 1 head, dropout 0.1, batch 64, max_ep_len 1000, one torch thread, CPU),
then times training steps (forward + masked MSE on the actions + backward + gradient clipping
at the recipe's 0.25 + AdamW step; the same for both models):

- flexrl: `DTModule.loss` + the module's own `configure_optimizers` (AdamW + warmup schedule),
  fed by the real data path: the OfflineDataModule's train DataLoader (the store's
  WindowSampler behind it) with the recipe's num_workers, so its time includes waiting for data;
- flexrl (in memory): the same steps on the pre-sampled batches (model cost alone);
- peer: `transformers.DecisionTransformerModel` with the same config (state_dim 351, act_dim 17,
  hidden 128, 3 layers, 1 head, n_inner 512, relu, dropout 0.1, max_ep_len 1000, tanh actions),
  AdamW with the same lr / weight decay, on the **same batches** (the DataModule's batches of
  epoch 0, pre-sampled once into memory, observations pre-normalised with the dataset's
  statistics, so the peer does no data loading and no normalisation).

Goal: the peer has no goal input. Its state is the 351-value observation, which already holds
the goal (obs[348:351]), so both models see the same information; flexrl's DT additionally
runs its real goal path (a 3 -> 128 goal embedding added to every token), which is extra
work on flexrl's side only. That is the fairest like-for-like: same tokens (3K = 60), same
backbone size, same data, and flexrl pays for everything its real command does.

Repetitions are interleaved (flexrl, peer, flexrl in memory, flexrl, peer, ...) because the
machine may be shared; the table reports medians of steps/s (wall clock) and the ratio flexrl /
peer, and steps per CPU second of the training thread (less sensitive to other jobs).

Data waiting: the share of flexrl's step time spent in the DataLoader's next() (the real
`flexrl finetune dt` path, recipe default num_workers), steady state, plus the cost of starting
an epoch (Lightning reloads the train DataLoader every epoch) amortised over the recipe's
steps_per_epoch. Target: under 10%.

Prints a table and writes benchmarks/results/dt_bench.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
OBS_DIM, GOAL_DIM, ACT_DIM = 351, 3, 17
BASE_OBS_DIM = OBS_DIM - GOAL_DIM
MAX_LEN = 1000


def write_dataset(workspace: Path, episodes: int, seed: int = 0) -> None:
    """Synthetic Humanoid-shaped episodes (random, generated here; nothing is downloaded)."""
    from flexrl.store import ShardWriter, make_episode

    rng = np.random.default_rng(seed)
    with ShardWriter("humanoid", workspace, durable=False) as writer:
        for e in range(episodes):
            steps = int(rng.integers(20, MAX_LEN + 1))
            base = rng.normal(size=(steps + 1, BASE_OBS_DIM)).astype(np.float32)
            goal = rng.uniform(-1, 1, size=GOAL_DIM).astype(np.float32)
            goals = np.tile(goal, (steps + 1, 1))
            obs = np.concatenate([base, goals], axis=1)
            actions = np.tanh(rng.normal(size=(steps, ACT_DIM))).astype(np.float32)
            rewards = rng.uniform(0, 5, size=steps).astype(np.float32)
            writer.add(
                make_episode(
                    obs,
                    actions,
                    rewards,
                    np.arange(steps) == steps - 1 if steps < MAX_LEN else np.zeros(steps, bool),
                    np.arange(steps) == steps - 1 if steps == MAX_LEN else np.zeros(steps, bool),
                    goals=goals[:-1],
                    task="goal",
                    seed=e,
                )
            )


def clip(params: list[torch.nn.Parameter], value: float | None) -> None:
    if value is not None:
        torch.nn.utils.clip_grad_norm_(params, value)


def flexrl_stepper(module, grad_clip):
    """One training step of flexrl's DTModule: its loss, its optimiser and schedule."""
    from typing import Any

    opt: Any = module.configure_optimizers()
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    params = [p for p in module.parameters() if p.requires_grad]
    module.train()

    def step(batch) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = module.loss(batch)
        loss.backward()
        clip(params, grad_clip)
        optimizer.step()
        scheduler.step()
        return loss.detach()

    return step


def peer_model(recipe, info):
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    dt = recipe.dt
    config = DecisionTransformerConfig(
        state_dim=info.obs_dim,
        act_dim=info.act_dim,
        hidden_size=dt.hidden_size,
        max_ep_len=dt.max_ep_len,
        action_tanh=True,
        n_layer=dt.n_layer,
        n_head=dt.n_head,
        n_inner=dt.n_inner or 4 * dt.hidden_size,
        activation_function=dt.activation_function,
        n_positions=3 * dt.context_len,
        resid_pdrop=dt.dropout,
        embd_pdrop=dt.dropout,
        attn_pdrop=dt.dropout,
        use_cache=False,
        bos_token_id=0,  # the default 50256 is outside its 1-entry vocabulary (never used)
        eos_token_id=0,
    )
    return DecisionTransformerModel(config)


def peer_stepper(model, train_cfg):
    from flexrl.offline.base import masked_mse

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay
    )
    model.train()

    def step(batch) -> float:
        optimizer.zero_grad(set_to_none=True)
        out = model(
            states=batch["states"],
            actions=batch["actions"],
            returns_to_go=batch["returns_to_go"],
            timesteps=batch["timesteps"],
            attention_mask=batch["attention_mask"],
            return_dict=True,
        )
        loss = masked_mse(out.action_preds, batch["actions"], batch["mask"])
        loss.backward()
        clip(params, train_cfg.grad_clip)
        optimizer.step()
        return loss.detach()

    return step


def peer_batch(batch, mean: torch.Tensor, std: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "states": ((batch["observations"] - mean) / std) * batch["mask"].unsqueeze(-1),
        "actions": batch["actions"],
        "returns_to_go": batch["returns_to_go"].unsqueeze(-1),
        "timesteps": batch["timesteps"],
        "attention_mask": batch["mask"].long(),
        "mask": batch["mask"],
    }


def run_memory(step, batches, steps: int) -> tuple[float, float]:
    """(steps/s wall clock, steps per CPU second of this thread) cycling in-memory batches."""
    start, cpu = time.perf_counter(), time.thread_time()
    for i in range(steps):
        step(batches[i % len(batches)])
    return steps / (time.perf_counter() - start), steps / (time.thread_time() - cpu)


def run_loader(step, iterator, steps: int) -> tuple[float, float, float, float]:
    """(steps/s wall, steps/CPU s, seconds waiting in next(), seconds in all) from a loader."""
    wait = 0.0
    start, cpu = time.perf_counter(), time.thread_time()
    for _ in range(steps):
        t = time.perf_counter()
        batch = next(iterator)
        wait += time.perf_counter() - t
        step(batch)
    total = time.perf_counter() - start
    return steps / total, steps / (time.thread_time() - cpu), wait, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--steps", type=int, default=40, help="training steps per repetition")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batches", type=int, default=16, help="distinct pre-sampled batches")
    parser.add_argument("--quick", action="store_true", help="about a minute")
    args = parser.parse_args()
    if args.quick:
        args.episodes, args.steps, args.repeats, args.batches = 60, 12, 3, 8

    from flexrl.config import FinetuneDTRecipe, validate_recipe
    from flexrl.offline.training import build

    recipe = validate_recipe({}, FinetuneDTRecipe)  # the defaults `flexrl finetune dt` uses
    total_loader_steps = args.repeats * args.steps + args.batches + 8
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        t0 = time.perf_counter()
        write_dataset(ws, args.episodes)
        write_s = time.perf_counter() - t0

        module, data = build("dt", recipe, "humanoid", ws)
        assert data.info is not None
        info = data.info
        train_episodes = len(data.train_episodes)
        torch.manual_seed(recipe.seed)
        peer = peer_model(recipe, info)
        threads = torch.get_num_threads()

        # Epoch-start cost, as Lightning pays it every epoch (a fresh train DataLoader).
        epoch_start = []
        for _ in range(2 if args.quick else 3):
            t = time.perf_counter()
            it = iter(data.train_dataloader())
            next(it)
            epoch_start.append(time.perf_counter() - t)
            del it

        # The same batches for everyone: epoch 0's first batches, from the real DataModule.
        data.steps_per_epoch = total_loader_steps
        presampled = list(islice(iter(data.train_dataloader()), args.batches))
        loader_iter = iter(data.train_dataloader())  # yields the same batches first, then more
        mean, std = module.net.normalizer.mean, module.net.normalizer.std
        peer_batches = [peer_batch(b, mean, std) for b in presampled]

        flex_step = flexrl_stepper(module, recipe.train.grad_clip)
        flex_mem_step = flexrl_stepper(_clone_module(module, recipe), recipe.train.grad_clip)
        peer_step = peer_stepper(peer, recipe.train)

        # Warm-up (allocator, first-call dispatch) on all three.
        for i in range(4):
            flex_step(next(loader_iter))
            flex_mem_step(presampled[i % len(presampled)])
            peer_step(peer_batches[i % len(peer_batches)])

        flex, flex_mem, peer_rates, wait_shares, next_ms, step_ms = [], [], [], [], [], []
        cpu: dict[str, list[float]] = {"flexrl": [], "flexrl_mem": [], "peer": []}
        for _ in range(args.repeats):
            rate, cpu_rate, wait, total = run_loader(flex_step, loader_iter, args.steps)
            flex.append(rate)
            cpu["flexrl"].append(cpu_rate)
            wait_shares.append(wait / total)
            next_ms.append(1e3 * wait / args.steps)
            step_ms.append(1e3 * total / args.steps)
            rate, cpu_rate = run_memory(peer_step, peer_batches, args.steps)
            peer_rates.append(rate)
            cpu["peer"].append(cpu_rate)
            rate, cpu_rate = run_memory(flex_mem_step, presampled, args.steps)
            flex_mem.append(rate)
            cpu["flexrl_mem"].append(cpu_rate)

    med = statistics.median
    steady_share = med(wait_shares)
    spe = recipe.train.steps_per_epoch
    start_ms_per_step = 1e3 * med(epoch_start) / spe
    share = (med(next_ms) + start_ms_per_step) / (med(step_ms) + start_ms_per_step)
    ratio = med(flex) / med(peer_rates)
    ratio_mem = med(flex_mem) / med(peer_rates)

    cpu_ratio = med(cpu["flexrl"]) / med(cpu["peer"])
    rows = [
        ("flexrl DT, real DataModule path (+goal embedding)", flex, cpu["flexrl"]),
        ("flexrl DT, pre-sampled batches (+goal embedding)", flex_mem, cpu["flexrl_mem"]),
        ("transformers.DecisionTransformerModel (peer)", peer_rates, cpu["peer"]),
    ]
    print(
        f"dataset: {args.episodes} episodes, {info.obs_dim} obs (goal in obs[348:351]) + "
        f"{info.goal_dim} goal, {info.act_dim} act; K={recipe.dt.context_len}, "
        f"batch {recipe.train.batch_size}, torch threads {threads}, num_workers "
        f"{recipe.data.num_workers}; {args.repeats} x {args.steps} steps, interleaved"
    )
    print(f"{'what':<52} {'median steps/s':>14} {'min':>7} {'max':>7} {'steps/CPU s':>12}")
    for what, rates, cpu_rates in rows:
        print(
            f"{what:<52} {med(rates):>14.2f} {min(rates):>7.2f} {max(rates):>7.2f} "
            f"{med(cpu_rates):>12.2f}"
        )
    print(
        f"{'ratio flexrl (real data path) / peer':<52} {ratio:>14.3f}   (target >= 1; "
        f"by CPU time {cpu_ratio:.3f})"
    )
    print(f"{'ratio flexrl (pre-sampled) / peer':<52} {ratio_mem:>14.3f}")
    print(
        f"{'data wait, steady (next() / step)':<52} {100 * steady_share:>13.1f}%"
        f"   ({med(next_ms):.2f} ms of {med(step_ms):.2f} ms)"
    )
    print(
        f"{'data wait incl. epoch start / ' + str(spe) + ' steps':<52} {100 * share:>13.1f}%"
        f"   (target < 10%; epoch start {med(epoch_start):.2f} s)"
    )

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "dt_bench.json"
    out.write_text(
        json.dumps(
            {
                "config": {
                    "episodes": args.episodes,
                    "dataset_write_s": write_s,
                    "obs_dim": info.obs_dim,
                    "goal_dim": info.goal_dim,
                    "act_dim": info.act_dim,
                    "context_len": recipe.dt.context_len,
                    "hidden_size": recipe.dt.hidden_size,
                    "n_layer": recipe.dt.n_layer,
                    "n_head": recipe.dt.n_head,
                    "dropout": recipe.dt.dropout,
                    "batch_size": recipe.train.batch_size,
                    "max_ep_len": recipe.dt.max_ep_len,
                    "num_workers": recipe.data.num_workers,
                    "torch_threads": threads,
                    "steps": args.steps,
                    "repeats": args.repeats,
                    "quick": args.quick,
                    "train_episodes": train_episodes,
                    "goal": "peer state = 351-value obs incl. goal; flexrl also embeds goals",
                },
                "steps_per_s": {
                    "flexrl_real_data_path": flex,
                    "flexrl_presampled": flex_mem,
                    "peer_transformers_dt": peer_rates,
                },
                "median_steps_per_s": {
                    "flexrl_real_data_path": med(flex),
                    "flexrl_presampled": med(flex_mem),
                    "peer_transformers_dt": med(peer_rates),
                },
                "steps_per_cpu_s": cpu,
                "median_steps_per_cpu_s": {name: med(v) for name, v in cpu.items()},
                "ratio_flexrl_over_peer": ratio,
                "ratio_flexrl_over_peer_cpu_time": cpu_ratio,
                "ratio_flexrl_presampled_over_peer": ratio_mem,
                "data_wait": {
                    "steady_share": steady_share,
                    "next_ms_median": med(next_ms),
                    "step_ms_median": med(step_ms),
                    "epoch_start_s": epoch_start,
                    "steps_per_epoch": spe,
                    "share_with_epoch_start": share,
                },
                "python": sys.version.split()[0],
                "torch": torch.__version__,
                "machine": platform.machine(),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


def _clone_module(module, recipe):
    """A second DTModule with the same weights (its own optimiser state)."""
    from flexrl.offline.dt import DTModule

    twin = DTModule(recipe, module.info)
    twin.load_state_dict(module.state_dict())
    return twin


if __name__ == "__main__":
    main()
