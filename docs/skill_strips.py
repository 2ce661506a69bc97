"""Frame strips of the shipped skills for the README, from MuJoCo's real renderer.

    MUJOCO_GL=egl .venv/bin/python docs/skill_strips.py [walk_forward turn_left ...]

For each shipped policy (flexrl/zoo), one deterministic episode of its skill (the multitask
policy: walk_forward) from an eval seed; FRAMES frames 0.75 s apart are rendered by gymnasium's
Humanoid camera (it follows the torso: the floor's checks show the motion) and laid side by side
into docs/skills/NAME.png.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported

import imageio.v2 as imageio
import numpy as np

from flexrl import zoo
from flexrl.config import TrainRecipe
from flexrl.envs import make_env
from flexrl.rl.checkpoint import load_checkpoint, load_policy

OUT = Path(__file__).parent / "skills"
FRAMES, EVERY, SIZE = 8, 50, (200, 240)  # 8 frames, 50 steps (0.75 s) apart, width x height
SKILL_TASK = {"multitask": "walk_forward"}


def strip(name: str, seed: int = 2026) -> Path:
    path = zoo.zoo_path(zoo.PREFIX + name)
    recipe = TrainRecipe.model_validate(load_checkpoint(path)["recipe"])
    task = SKILL_TASK.get(name, name)
    env = make_env(
        recipe.env.model_copy(update={"task": task, "task_weights": {}}), render_mode="rgb_array"
    )
    base = env.unwrapped
    base.model.vis.global_.offwidth, base.model.vis.global_.offheight = SIZE
    base.mujoco_renderer.width, base.mujoco_renderer.height = SIZE
    policy = load_policy(path)
    obs, _ = env.reset(seed=seed)
    frames = []
    for step in range(FRAMES * EVERY):
        if step % EVERY == 0:
            frames.append(env.render())
        obs, _, terminated, _, _ = env.step(policy.act(obs))
        if terminated:
            break
    env.close()
    OUT.mkdir(exist_ok=True)
    out = OUT / f"{name}.png"
    imageio.imwrite(out, np.concatenate(frames, axis=1))
    return out


def main() -> None:
    for name in sys.argv[1:] or zoo.names():
        print(strip(name))


if __name__ == "__main__":
    main()
