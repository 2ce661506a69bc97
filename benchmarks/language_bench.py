"""The instruction parser on held-out paraphrases, what encoding costs, and how often a policy
follows a held-out instruction against the same policy given the true command.

    .venv/bin/python benchmarks/language_bench.py [--policy zoo:goal] [--instructions 40]
    .venv/bin/python benchmarks/language_bench.py --quick     # 10 instructions, 1 episode each

1. Parser (the shipped head, flexrl/language/parser.safetensors): every distinct instruction of
   20,000 held-out draws (held-out templates; each word a held-out one with probability 0.5, and
   the hardest split where every word is), exact commands, refusals and the mean command error
   |parsed - true| (Euclidean, over the answered ones); refusal of out-of-domain text.
2. Encoding: loading MiniLM, one new instruction alone, one in a batch of 64, a cached one.
3. Following: N distinct held-out instructions (seeded) whose commands lie in the ranges the
   policy trained on; each episode of the goal task is given the parsed command and, with the
   same seeds, the true one (each instruction has seeds of its own). Success is the skills'
   criterion (flexrl/language/feedback.py) against the TRUE command in both cases: mean
   velocity error <= 0.25 m/s, yaw-rate error <= 0.2 rad/s, no fall. Episodes whose parsed
   command equals the true one are the same episodes (same seeds, same command, deterministic
   policy), so they are run once.
Writes benchmarks/results/language_bench.POLICY.json (language_bench.json without following)
and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parser_table() -> dict:
    from flexrl.language.grammar import OUT_OF_DOMAIN, generate
    from flexrl.language.parser import OutOfDomain, parse, score

    out = {
        f"heldout_unseen_{unseen}": score(
            list(generate("heldout", 20_000, unseen=unseen))
        ).as_json()
        for unseen in (0.5, 1.0)
    }
    ood = [*OUT_OF_DOMAIN[1], "", "x" * 10_000, "please dance", "jump up and down"]
    refused = []
    for text in ood:
        try:
            parse(text)
        except OutOfDomain:
            refused.append(text)
    out["out_of_domain"] = {
        "sentences": len(ood),
        "refused": len(refused) / len(ood),
        "accepted": [t for t in ood if t not in refused],
    }
    return out


def encoding_costs() -> dict:
    import flexrl.language.encoder as enc
    from flexrl.language.grammar import generate

    enc.sentence_encoder.cache_clear()
    start = time.perf_counter()
    encoder = enc.sentence_encoder()
    load = time.perf_counter() - start
    texts = list(dict.fromkeys(i.text for i in generate("heldout", 2000, seed=3)))[:128]
    alone = []
    for text in texts[:32]:
        start = time.perf_counter()
        encoder([text])
        alone.append(time.perf_counter() - start)
    start = time.perf_counter()
    encoder(texts[32:96])
    batched = (time.perf_counter() - start) / 64
    start = time.perf_counter()
    for _ in range(100):
        encoder(texts[:32])
    cached = (time.perf_counter() - start) / 3200
    return {
        "load_s": load,
        "alone_ms": 1e3 * statistics.median(alone),
        "batched_ms": 1e3 * batched,
        "cached_us": 1e6 * cached,
    }


def following(policy: str, n: int, episodes: int, seed: int) -> dict:
    from flexrl.envs.tasks import at_command, untrained_commands
    from flexrl.evaluation import episode_seeds
    from flexrl.language.feedback import motion_of, succeeded
    from flexrl.language.grammar import generate
    from flexrl.language.parser import OutOfDomain, parse
    from flexrl.rollout.loop import EpisodeSpec, rollout
    from flexrl.rollout.slots import EnvSlots
    from flexrl.rollout.sources import load_policy_source
    from flexrl.workspace import Workspace

    source = load_policy_source(Workspace(ROOT / "unused"), policy)
    base = source.env
    # Only instructions whose command the policy trained on (zoo:goal never walked backwards),
    # the same number of each intent (taken in turn), so no intent is left out by chance.
    drawn = {i.text: i for i in generate("heldout", 20 * n, seed=seed)}.values()
    by_intent: dict[str, list] = {}
    for item in drawn:
        if not untrained_commands(base, [item.command]):
            by_intent.setdefault(item.intent, []).append(item)
    items = [i for group in zip(*by_intent.values(), strict=False) for i in group][:n]
    # Each instruction its own episode seeds (the true and the told command share them): with
    # one set for all, the instructions of one command were the same episodes, all or nothing.
    seeds = episode_seeds(seed, len(items) * episodes)

    def successes(command, meant, k: int) -> list[bool]:
        """Instruction k's episodes given `command`, judged against the command the
        instruction `meant`: a misread instruction followed well is still a failure."""
        specs = [EpisodeSpec(j, s, "goal") for j, s in enumerate(seeds[k * episodes :][:episodes])]
        slots = EnvSlots(at_command(base, [command], None), episodes)
        try:
            actor = source.make_actor(slots.action_space, 0.0, False)
            dt, out = slots.envs[0].unwrapped.dt, []
            for rolled in rollout(slots, actor, specs):
                ep = rolled.episode
                goals = np.tile(np.asarray(meant, dtype=np.float64), (ep.length, 1))
                fell = bool(ep.terminations[-1])
                out.append(succeeded(motion_of(ep.infos["lin_vel"], ep.infos["yaw_rate"],
                                               goals, fell, dt)))  # fmt: skip
            return out
        finally:
            slots.close()

    true_ok, parsed_ok, rows = 0, 0, []
    for k, item in enumerate(items):
        truth = successes(item.command, item.command, k)
        try:
            command = parse(item.text).command
            same = np.allclose(command, item.command)
            given = truth if same else successes(command, item.command, k)
        except OutOfDomain:
            command, given = None, [False] * episodes
        true_ok += sum(truth)
        parsed_ok += sum(given)
        rows.append({"text": item.text, "intent": item.intent, "true": item.command,
                     "parsed": command,
                     "true_success": sum(truth), "parsed_success": sum(given)})  # fmt: skip
        print(f"  {k + 1}/{len(items)} {item.text!r}: {sum(given)}/{sum(truth)}", flush=True)
    total = len(items) * episodes
    intents = {}
    for row in rows:
        counts = intents.setdefault(row["intent"], {"instructions": 0, "true": 0, "instruction": 0})
        counts["instructions"] += 1
        counts["true"] += row["true_success"]
        counts["instruction"] += row["parsed_success"]
    return {
        "by_intent": intents,
        "policy": policy,
        "instructions": len(items),
        "episodes_each": episodes,
        "success_true_command": true_ok / total,
        "success_instruction": parsed_ok / total,
        "ratio": parsed_ok / true_ok if true_ok else None,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="zoo:goal")
    parser.add_argument("--instructions", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.instructions, args.episodes = 10, 1
    import torch

    torch.set_num_threads(1)
    results = {"encoding": encoding_costs(), "parser": parser_table()}
    if args.instructions > 0:  # 0: the parser and encoding only
        results["following"] = following(args.policy, args.instructions, args.episodes, args.seed)
    # one file per policy followed ("language_bench.zoo-goal.json"), so runs do not overwrite
    suffix = f".{args.policy.replace(':', '-')}" if args.instructions > 0 else ""
    out = ROOT / "benchmarks" / "results" / f"language_bench{suffix}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))

    print("\n| held-out split | distinct | exact command | refused | mean command error |")
    print("|---|---:|---:|---:|---:|")
    for key, row in results["parser"].items():
        if key.startswith("heldout"):
            print(f"| {key} | {row['instructions']} | {row['exact']:.1%} | {row['refused']:.1%} "
                  f"| {row['command_error']:.3f} |")  # fmt: skip
    ood = results["parser"]["out_of_domain"]
    print(f"\nout of domain: {ood['refused']:.0%} of {ood['sentences']} refused; accepted: "
          f"{ood['accepted']}")  # fmt: skip
    e = results["encoding"]
    print(f"\nencoding: load {e['load_s']:.1f} s; a new instruction {e['alone_ms']:.1f} ms alone, "
          f"{e['batched_ms']:.1f} ms in a batch of 64; cached {e['cached_us']:.1f} us")  # fmt: skip
    f = results.get("following")
    if f is None:
        print(f"wrote {out}")
        return
    print(f"\nfollowing ({f['policy']}, {f['instructions']} held-out instructions x "
          f"{f['episodes_each']} episodes): true command {f['success_true_command']:.1%}, "
          f"instruction {f['success_instruction']:.1%}, ratio {f['ratio']}")  # fmt: skip
    print("\n| intent | instructions | success, true command | success, instruction |")
    print("|---|---:|---:|---:|")
    for intent, c in f["by_intent"].items():
        n = c["instructions"] * f["episodes_each"]
        print(f"| {intent} | {c['instructions']} | {c['true']}/{n} | {c['instruction']}/{n} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
