"""The whole pipeline through the real CLI: PPO -> collect -> finetune bc and dt -> eval.

The steps of `make demo`, on InvertedPendulum. A random policy scores about 5 there and a
constant action about 26. The dataset mixes 10 episodes of an expert (the quickstart recipe,
which trains until its last 20 episodes reach 1000) with 200 of a novice (the same recipe
stopped after 3 updates, 65-107 by seed), so its mean return is 110-150. BC on the expert's
episodes alone must clear 500 (it scored 1000 for every demo seed tried): BC and the collected
data work. The Decision Transformer on the mixed data, conditioned on the best return in it,
must clear 200 and the data's mean (a DT that learned nothing scores about 26, like a
constant action).
For the demo's seeds 0-4 it scored 1000, 1000, 923, 1000 and 312 (seed 4 falls; its data's
mean was 146), so the bars sit at 1.5x and 2x below the worst seed. BC on the mixed data lands
anywhere between the novice and the expert (87-1000 over the seeds tried), so its score is
only reported.
"""

from __future__ import annotations

import json

import pytest

from flexrl.store import open_dataset


@pytest.mark.slow
def test_ppo_to_collect_to_bc_and_dt_to_eval(cli, workspace):
    ws = ["--workspace", str(workspace)]

    def ok(*args: str) -> str:
        result = cli(*args, *ws)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    def score(policy: str) -> float:
        report = json.loads(ok("eval", policy, "--episodes", "3", "--json"))
        (task,) = report["tasks"].values()
        return task["return_mean"]

    ok("train", "--config", "recipes/quickstart.yaml", "--name", "expert")
    ok("train", "--config", "recipes/quickstart.yaml", "--name", "novice",
       "--set", "ppo.total_steps=6144")  # fmt: skip
    ok("collect", "--policy", "expert", "--dataset", "pendulum", "--episodes", "10",
       "--noise", "0.3", "--seed", "0")  # fmt: skip
    ok("collect", "--policy", "novice", "--dataset", "pendulum", "--episodes", "200",
       "--seed", "10")  # fmt: skip
    expert_data = open_dataset("pendulum@v1", workspace).episode_returns
    mixed_data = open_dataset("pendulum@v2", workspace).episode_returns
    novice_data = mixed_data[len(expert_data) :]
    assert expert_data.mean() > 900 and novice_data.mean() < 200, (expert_data, novice_data)

    for name, version in (("bc-expert", "v1"), ("bc", "v2")):
        ok("finetune", "bc", "--dataset", f"pendulum@{version}", "--config",
           "recipes/quickstart_bc.yaml", "--name", name, "--no-progress")  # fmt: skip
    ok("finetune", "dt", "--dataset", "pendulum@v2", "--config", "recipes/quickstart_dt.yaml",
       "--name", "dt", "--no-progress")  # fmt: skip
    bc_expert, bc, dt = score("bc-expert"), score("bc"), score("dt")
    assert bc_expert > 500, bc_expert
    assert dt > 200 and dt > mixed_data.mean(), (dt, bc, mixed_data.mean())

    # Any policy eval runs, collect runs too: the DT's own episodes, recorded as its file's.
    ok("collect", "--policy", "dt", "--dataset", "by-dt", "--episodes", "3", "--seed", "5")
    outputs = json.loads(ok("runs", "show", "dt", "--json"))["run"]["outputs"]
    (policy,) = [a for a in outputs if a["role"] == "policy"]
    assert {e.policy for e in open_dataset("by-dt", workspace)} == {policy["digest"]}

    def downstream(run: str) -> set[str | None]:
        lineage = json.loads(ok("runs", "lineage", run, "--json"))
        return {lineage["nodes"][k].get("name") for k in lineage["downstream"]}

    # pendulum@v1 holds the expert's episodes; v2 holds all of them and adds the novice's.
    made_from_expert = {"pendulum", "bc-expert", "eval-bc-expert", "bc", "dt", "eval-dt"}
    assert made_from_expert <= downstream("expert")
    assert {"pendulum", "bc", "dt", "eval-bc", "eval-dt"} <= downstream("novice")
