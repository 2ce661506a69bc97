"""Language-conditioned offline learning end to end: episodes collected with instructions, a
DT and BC trained on their embeddings (`data.condition: instruction`), evaluated told in words.
Tiny budgets: this checks the path, not that the policies learn (benchmarks/RESULTS.md)."""

from __future__ import annotations

import json

import pytest
import torch

from flexrl.offline.checkpoint import load_policy_checkpoint


@pytest.fixture(scope="module")
def told(tmp_path_factory):
    from tests.conftest import run_cli

    ws = tmp_path_factory.mktemp("told")
    result = run_cli("collect", "--policy", "zoo:goal", "--dataset", "told", "--episodes", "3",
                     "--instruction", "walk forward", "--instruction", "turn left", "--seed", "1",
                     "--num-envs", "3", "-w", str(ws))  # fmt: skip
    assert result.returncode == 0, result.stderr
    return ws


@pytest.mark.parametrize("kind", ["dt", "bc"])
def test_finetune_on_instructions_and_eval_told(cli, told, kind):
    result = cli("finetune", kind, "--dataset", "told", "--config", f"recipes/language_{kind}.yaml",
                 "--name", f"{kind}-told", "--set", "train.max_steps=4", "--set",
                 "train.steps_per_epoch=2", "--set", "train.val_batches=1", "--set",
                 "train.warmup_steps=1", "--no-progress", "-w", str(told))  # fmt: skip
    assert result.returncode == 0, result.stderr
    policy = next((told / "runs").glob(f"*-{kind}-told-*/artifacts/checkpoints/policy.pt"))
    checkpoint = load_policy_checkpoint(policy)
    assert checkpoint["dataset"]["condition"] == "instruction"
    assert checkpoint["dataset"]["goal_dim"] == 384
    result = cli("eval", f"{kind}-told", "--instruction", "go ahead slowly", "--episodes", "1",
                 "--instruction-steps", "50", "--json", "-w", str(told))  # fmt: skip
    assert result.returncode == 0, result.stderr
    (episode,) = json.loads(result.stdout)["episodes"]
    assert episode["feedback"][0]["instruction"] == "go ahead slowly"


def test_the_actor_is_given_the_instruction_it_was_told():
    """Told texts by their command; other commands said in words, as relabelling says them."""
    from flexrl.language.encoder import encode
    from flexrl.offline.actors import InstructionConditioner

    conditioner = InstructionConditioner({(0.3, 0.0, 0.0): "stroll onward leisurely"})
    got = conditioner(torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.0, 0.5]]).numpy())
    expected = encode(["stroll onward leisurely", "turn left at 0.50 rad/s"])
    assert (got == expected).all()


def test_data_without_instructions_is_refused(cli, tmp_path):
    ws = tmp_path / "ws"
    result = cli("collect", "--policy", "zoo:goal", "--dataset", "plain", "--episodes", "1",
                 "--seed", "1", "-w", str(ws))  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = cli("finetune", "bc", "--dataset", "plain", "--config", "recipes/language_bc.yaml",
                 "-w", str(ws))  # fmt: skip
    assert result.returncode == 2 and "flexrl data relabel" in result.stderr
    assert result.stderr.count("\n") == 1
    (only,) = (ws / "runs").iterdir()  # the collect run; no finetune run was recorded
    assert "-plain-" in only.name  # (a glob for "*bc*" matched a run id's random hex once)


def test_relabelled_data_keeps_the_env_it_was_collected_in(cli, told):
    """A derived dataset's env is its source's (through the relabel run's input), so policies
    trained on it can be evaluated and it exports to Minari with an env spec."""
    from flexrl.collection import dataset_env

    result = cli("data", "relabel", "told", "--name", "told-again", "-w", str(told))
    assert result.returncode == 0, result.stderr
    env = dataset_env(told, "told-again")
    assert env is not None and env == dataset_env(told, "told")
