"""Where a policy's yaw-rate error lives in frequency: slow drift, the stride, or jitter.

    .venv/bin/python benchmarks/yaw_spectrum.py zoo:multitask turn_right [--episodes 4 --seed 3]

Runs deterministic episodes of TASK (eval seeds, as `flexrl eval`) and splits the variance of
each episode's per-step yaw-rate error (measured minus commanded, its mean removed) into
frequency bands by FFT: below 1 Hz is the turning rate wandering over seconds, 1-4 Hz the
stride, above 4 Hz step-to-step jitter. Prints one row per episode with the mean |error|, its
bias (the part a better mean turning rate would remove), the shares, and the mean |error| left
with the bias and everything below 1 Hz removed: what the stride and jitter alone cost.
"""

from __future__ import annotations

import argparse

import numpy as np

from flexrl.evaluation import episode_seeds
from flexrl.rollout.loop import EpisodeSpec, rollout
from flexrl.rollout.slots import EnvSlots
from flexrl.rollout.sources import load_policy_source
from flexrl.workspace import Workspace

BANDS_HZ = ((0.0, 1.0), (1.0, 4.0), (4.0, np.inf))


def band_shares(error: np.ndarray, dt: float) -> list[float]:
    """Shares of the variance of `error` (mean removed) in each of BANDS_HZ."""
    power = np.abs(np.fft.rfft(error - error.mean())) ** 2
    freq = np.fft.rfftfreq(len(error), dt)
    return [float(power[(freq >= lo) & (freq < hi)].sum() / power.sum()) for lo, hi in BANDS_HZ]


def above(error: np.ndarray, dt: float, hz: float) -> np.ndarray:
    """`error` with every frequency below `hz` removed, its mean included."""
    spectrum = np.fft.rfft(error)
    spectrum[np.fft.rfftfreq(len(error), dt) < hz] = 0
    return np.fft.irfft(spectrum, len(error))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", help="a train run or zoo:NAME")
    parser.add_argument("task", help="turn_left, turn_right, walk_forward or goal")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--workspace", default="workspace")
    args = parser.parse_args()

    source = load_policy_source(Workspace(args.workspace), args.policy)
    env = source.env.model_copy(update={"task": args.task})
    specs = [
        EpisodeSpec(k, s, args.task) for k, s in enumerate(episode_seeds(args.seed, args.episodes))
    ]
    bands = "  ".join(f"{lo:g}-{hi:g} Hz" for lo, hi in BANDS_HZ)
    print(f"steps  mean|err|  bias   {bands}  >1 Hz only")
    slots = EnvSlots(env, args.episodes)
    try:
        actor = source.make_actor(slots.action_space, 0.0, False)
        dt = slots.humanoids[0].dt  # seconds per policy step
        for result in rollout(slots, actor, specs):
            episode = result.episode
            error = episode.infos["yaw_rate"] - episode.goals[:, 2]
            shares = "  ".join(f"{share:7.0%}" for share in band_shares(error, dt))
            stride = np.abs(above(error, dt, 1.0)).mean()
            print(
                f"{episode.length:5d}  {np.abs(error).mean():9.3f}  {error.mean():+.3f}  {shares}"
                f"  {stride:10.3f}"
            )
    finally:
        slots.close()


if __name__ == "__main__":
    main()
