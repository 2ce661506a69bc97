"""The whole pipeline through the real CLI: PPO -> collect -> finetune bc and dt -> eval.

InvertedPendulum keeps it cheap. A random policy scores about 5 there and a constant action
about 26, so BC and DT policies that clear 500 must be reading their observations (and the
PPO policy that produced their data must have learned).
"""

from __future__ import annotations

import json

import pytest

from flexrl.store import open_dataset

BC_SMALL = [
    "--set", "train.max_steps=300",
    "--set", "train.steps_per_epoch=100",
    "--set", "train.val_batches=2",
    "--set", "train.warmup_steps=50",
    "--set", "train.learning_rate=1e-3",
    "--no-progress",
]  # fmt: skip


@pytest.mark.slow
def test_ppo_to_collect_to_bc_and_dt_to_eval(cli, workspace):
    ws = ["--workspace", str(workspace)]

    def ok(*args: str) -> str:
        result = cli(*args, *ws)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    ok("train", "--config", "recipes/quickstart.yaml", "--set", "ppo.total_steps=30000",
       "--name", "expert")  # fmt: skip
    ok("collect", "--policy", "expert", "--dataset", "pendulum", "--episodes", "30",
       "--noise", "0.3")  # fmt: skip
    ok("collect", "--policy", "random", "--env-id", "InvertedPendulum-v5", "--dataset",
       "pendulum-random", "--episodes", "10")  # fmt: skip
    expert_data = open_dataset("pendulum", workspace).episode_returns.mean()
    random_data = open_dataset("pendulum-random", workspace).episode_returns.mean()
    assert expert_data > 500 > 50 > random_data

    ok("finetune", "bc", "--dataset", "pendulum@v1", "--config", "recipes/finetune_bc.yaml",
       "--name", "bc", *BC_SMALL)  # fmt: skip
    ok("finetune", "dt", "--dataset", "pendulum@v1", "--config", "recipes/quickstart_dt.yaml",
       "--name", "dt", "--no-progress")  # fmt: skip
    for policy in ("bc", "dt"):
        report = json.loads(ok("eval", policy, "--episodes", "2", "--json"))
        (task,) = report["tasks"].values()
        assert task["return_mean"] > 500, (policy, task)

    lineage = json.loads(ok("runs", "lineage", "expert", "--json"))
    downstream = {lineage["nodes"][k].get("name") for k in lineage["downstream"]}
    assert {"pendulum", "bc", "dt", "eval-bc", "eval-dt"} <= downstream
