"""Fixtures for the analysis tests: real datasets (a real `flexrl collect` on Humanoid, and
small store-written ones), real runs recorded through the workspace API, a real sweep record,
and a Jupyter kernelspec that runs this interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flexrl.config import TrainRecipe, load_recipe
from flexrl.orchestrate.records import SweepStore, TrialStateName
from flexrl.orchestrate.spec import load_spec
from flexrl.store import Episode, ShardWriter, make_episode
from flexrl.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
HUMANOID_OBS, HUMANOID_ACT = 351, 17


def flexrl(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flexrl", *args],
        cwd=cwd,
        env={**os.environ, "FLEXRL_DEBUG": "", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="session")
def humanoid_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`hum@v1` (8 episodes) and `hum@v2` (+4, told "walk forward" or "turn left"), collected
    by a random policy on the goal task: random Humanoid episodes fall after ~20 steps, so this
    takes seconds."""
    ws = tmp_path_factory.mktemp("humanoid") / "ws"
    told = ["--instruction", "walk forward", "--instruction", "turn left"]
    for n, seed, how in ((8, 0, ["--task", "goal"]), (4, 100, told)):
        args = ["--dataset", "hum", "--episodes", str(n), "--seed", str(seed), *how]
        result = flexrl("collect", "--policy", "random", *args, "-w", str(ws))
        assert result.returncode == 0, result.stderr
    return ws


def plain_episode(
    rng: np.random.Generator, length: int, task: str | None, policy: str | None = None
) -> Episode:
    """A non-Humanoid episode (4-d observations, 2-d actions, no goals, no infos)."""
    return make_episode(
        observations=rng.normal(size=(length + 1, 4)).astype(np.float32),
        actions=rng.normal(size=(length, 2)).astype(np.float32),
        rewards=rng.normal(size=length).astype(np.float32),
        terminations=np.arange(length) == length - 1,
        truncations=np.zeros(length, bool),
        task=task,
        policy=policy,
    )


@pytest.fixture(scope="session")
def plain_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`plain@v1`: 6 episodes (4 task a, 2 task b) with no policy recorded; `plain@v2` adds 3
    of task b from policy `expert`."""
    ws = tmp_path_factory.mktemp("plain") / "ws"
    rng = np.random.default_rng(7)
    for tasks, policy in ((["a", "a", "a", "a", "b", "b"], None), (["b", "b", "b"], "expert")):
        with ShardWriter("plain", ws, durable=False) as writer:
            for i, task in enumerate(tasks):
                writer.add(plain_episode(rng, 5 + 3 * i, task, policy))
    return ws


def _log_curve(ws: Workspace, name: str, seed: int, recipe: TrainRecipe, slope: float) -> str:
    """A run whose episodic_return is slope * step + seed, logged at steps 0, 100, ..., 1000,
    with an empty cell every third row (as PPO leaves when no episode ended)."""
    with ws.start_run("train", name, recipe=recipe, seed=seed) as run:
        for k, step in enumerate(range(0, 1001, 100)):
            metrics = {"global_step": step}
            if k % 3 != 1:
                metrics["episodic_return"] = slope * step + seed
            run.log_metrics(step, metrics)
    return run.id


@pytest.fixture(scope="session")
def runs_ws(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Runs recorded through the real workspace API: recipe `lr=3e-4` with seeds 0, 2 and
    recipe `lr=1e-3` with seed 0; and a real sweep record (sweep_quickstart: 4 configs x 2
    seeds) whose trials point at runs with slope = config index + 1."""
    root = tmp_path_factory.mktemp("runs") / "ws"
    ws = Workspace(root)
    base = load_recipe(REPO / "recipes/quickstart.yaml", TrainRecipe)
    runs = [
        _log_curve(ws, f"lr3e-4-s{seed}", seed,
                   base.model_copy(update={"seed": seed, "name": f"s{seed}"}), 1.0)
        for seed in (0, 2)
    ]  # fmt: skip
    fast = load_recipe(REPO / "recipes/quickstart.yaml", TrainRecipe, ["ppo.learning_rate=1e-3"])
    runs.append(_log_curve(ws, "lr1e-3-s0", 0, fast, 2.0))
    store = SweepStore(root)
    record = store.create(load_spec(REPO / "recipes/sweep_quickstart.yaml"), "local")
    for trial in store.trials(record):
        run_id = _log_curve(ws, trial.run_name, trial.seed, base, float(trial.config + 1))
        state = store.load_state(record.id, trial.index)
        state.state, state.run_id = TrialStateName.SUCCEEDED, run_id
        store.save_state(record.id, state)
    return {"ws": root, "runs": runs, "sweep": record.id}


@pytest.fixture(scope="session")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A `python3` kernelspec that runs this interpreter (the venv's), first on JUPYTER_PATH,
    so the notebooks import the flexrl under test whatever kernels the machine has."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (flexrl tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    saved = {
        k: os.environ.get(k)
        for k in ("JUPYTER_PATH", "MPLBACKEND", "PYDEVD_DISABLE_FILE_VALIDATION")
    }
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(root), saved["JUPYTER_PATH"]]))
    os.environ.pop("MPLBACKEND", None)  # the kernel's own inline backend must draw the figures
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # quiets debugpy's frozen-modules warning
    yield root
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
