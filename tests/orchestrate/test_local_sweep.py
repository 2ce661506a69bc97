"""A real sweep end to end on the local backend: real `flexrl train` processes on the
quickstart recipe, a retry, a bad parameter, ranking, resume, and preemption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flexrl.orchestrate.records import SweepStore
from flexrl.orchestrate.results import iqm
from flexrl.workspace import Workspace

# One PPO update of 4 envs x 128 steps: a trial is mostly Python start-up.
TINY_SET = """
set:
  - ppo.total_steps=512
  - ppo.num_steps=128
  - ppo.update_epochs=1
  - ppo.hidden_sizes=[16, 16]
"""

# Trial 3's num_minibatches is more than the 512 steps of a rollout: `flexrl train` rejects
# it with exit 2 when it starts (the schema allows it, so submit cannot know).
SPEC = f"""
name: e2e
{TINY_SET}
parameters:
  ppo.num_minibatches: {{values: [2, 4, 8, 100000]}}
seeds: [0]
metric: {{name: episodic_return, goal: maximize}}
parallelism: 2
retries: 1
"""


def sweep_id(workspace: Path) -> str:
    (only,) = SweepStore(workspace).list_ids()
    return only


def test_local_sweep_end_to_end(cli, spec_file, workspace):
    spec = spec_file(SPEC)
    # FLEXRL_SWEEP_FAIL_ONCE (flexrl/orchestrate/trial.py): trial 1's first attempt exits 1.
    result = cli(
        "sweep", "submit", str(spec), "--workspace", str(workspace),
        env={"FLEXRL_SWEEP_FAIL_ONCE": "1"},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr  # one trial failed
    assert "trial 1: failed with exit status 1; retrying" in result.stdout
    assert "trial 3: failed with exit status 2 (bad input, not retried)" in result.stdout
    sid = sweep_id(workspace)
    store = SweepStore(workspace)

    status = json.loads(cli("sweep", "status", sid, "--json", "--workspace", str(workspace)).stdout)
    by_index = {t["index"]: t for t in status["trials"]}
    assert [by_index[i]["state"] for i in range(4)] == ["succeeded"] * 3 + ["failed"]
    assert [by_index[i]["attempts"] for i in range(4)] == [1, 2, 1, 1]
    assert "bad input, not retried" in by_index[3]["detail"]
    assert "ppo.num_minibatches" in by_index[3]["detail"]
    attempts = store.load_state(sid, 1).attempts
    assert [a.exit_code for a in attempts] == [1, 0]

    # Every trial ran the real command with its parameters and a deterministic run name.
    runs = {r.name: r for r in Workspace(workspace).list_runs()}
    for i in range(3):
        run = runs[f"{sid}-t{i}"]
        assert run.status == "completed" and "episodic_return" in run.metrics_last
        recipe = (workspace / "runs" / run.id / "recipe.yaml").read_text()
        assert f"num_minibatches: {[2, 4, 8][i]}" in recipe
    assert runs[f"{sid}-t3"].status == "failed"

    ranked = json.loads(
        cli("sweep", "results", sid, "--json", "--workspace", str(workspace)).stdout
    )
    metrics = [t["metric"] for t in ranked["trials"]]
    assert sorted(metrics, reverse=True) == metrics and len(metrics) == 3
    assert {t["index"] for t in ranked["trials"]} == {0, 1, 2}
    assert ranked["trials"][0]["metric"] == by_index[ranked["trials"][0]["index"]]["metric"]
    # One seed per configuration: each configuration is its trial, ranked the same way.
    configs = ranked["configs"]
    assert [c["trials"] for c in configs] == [[t["index"]] for t in ranked["trials"]]
    assert [c["best"] for c in configs] == [True, False, False]
    assert configs[0]["std"] is None and configs[0]["iqm"] == configs[0]["mean"] == metrics[0]
    table = cli("sweep", "results", sid, "--workspace", str(workspace)).stdout
    assert "best" in table and "IQM = mean" in table

    logs = cli("sweep", "logs", sid, "--trial", "1", "--workspace", str(workspace)).stdout
    assert "failing on purpose" in logs and "completed" in logs

    # resume: only the failed trial runs again (it fails the same way: bad input).
    result = cli("sweep", "resume", sid, "--workspace", str(workspace))
    assert result.returncode == 1
    assert "resuming trials 3" in result.stdout
    after = [store.load_state(sid, i) for i in range(4)]
    assert [len(s.attempts) for s in after] == [1, 2, 1, 2]

    # resume refuses once the spec changed since submission.
    spec.write_text(spec.read_text().replace("retries: 1", "retries: 2"))
    result = cli("sweep", "resume", sid, "--workspace", str(workspace))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "changed since submission" in result.stderr


def test_resume_runs_missing_trials(cli, spec_file, workspace):
    spec = spec_file(SPEC.replace("[2, 4, 8, 100000]", "[2, 4]").replace("name: e2e", "name: miss"))
    assert cli("sweep", "submit", str(spec), "--workspace", str(workspace)).returncode == 0
    sid = sweep_id(workspace)
    store = SweepStore(workspace)
    # A trial with no record (as if the coordinator died before starting it).
    (store.trial_dir(sid, 1) / "state.json").unlink()
    result = cli("sweep", "resume", sid, "--workspace", str(workspace))
    assert result.returncode == 0 and "resuming trials 1" in result.stdout
    assert [len(store.load_state(sid, i).attempts) for i in range(2)] == [1, 1]
    result = cli("sweep", "resume", sid, "--workspace", str(workspace))
    assert "nothing to resume" in result.stdout


def test_preempted_training_trial_resumes_from_its_checkpoint(cli, spec_file, workspace):
    """SIGTERM to run-trial (what the kubelet sends an evicted pod, and what the local pool
    sends on Ctrl-C) reaches the training process, which checkpoints and records itself
    interrupted; the next attempt continues from that checkpoint with --resume."""
    total = 16 * 512
    spec = spec_file(
        f"name: pre\n{TINY_SET}  - ppo.total_steps={total}\n  - ppo.checkpoint_every=1\n"
        "metric: {name: episodic_return}\n"
    )
    assert cli("sweep", "submit", str(spec), "--dry-run").returncode == 0
    from flexrl.orchestrate.records import SweepStore as Store
    from flexrl.orchestrate.spec import load_spec

    store = Store(workspace)
    record = store.create(load_spec(spec), "local")
    argv = [
        sys.executable,
        "-m",
        "flexrl",
        "sweep",
        "run-trial",
        record.id,
        "--workspace",
        str(workspace),
    ]
    env = {**os.environ, "JOB_COMPLETION_INDEX": "0", "FLEXRL_DEBUG": ""}  # as in a pod
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    runs_dir = workspace / "runs"
    deadline = time.monotonic() + 120
    while not list(runs_dir.glob("*/artifacts/last.pt")):  # wait for a first checkpoint
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 128 + signal.SIGTERM, output
    state = store.load_state(record.id, 0)
    assert state.state == "interrupted"
    first = Workspace(workspace).resolve_run(f"{record.id}-t0")
    assert first.status == "interrupted"
    steps_before = first.metrics_last.get("global_step", 0)
    assert steps_before < total

    result = cli("sweep", "run-trial", record.id, "--index", "0", "--workspace", str(workspace))
    assert result.returncode == 0, result.stdout + result.stderr
    state = store.load_state(record.id, 0)
    assert state.state == "succeeded" and len(state.attempts) == 2
    assert state.attempts[1].resumed_from == first.id
    assert f"--resume {first.id}" in result.stdout
    second = Workspace(workspace).load_run(state.run_id)
    assert second.id != first.id and second.metrics_last["global_step"] >= total
    assert any(a.kind == "run" and a.ref == first.id and a.role == "resume" for a in second.inputs)
    # Succeeded trials are not run again (a resumed Kubernetes Job runs every index).
    again = cli("sweep", "run-trial", record.id, "--index", "0", "--workspace", str(workspace))
    assert again.returncode == 0 and "already succeeded" in again.stdout


# Two configurations x four seeds.
SEEDS_SPEC = f"""
name: seeds
{TINY_SET}
parameters:
  ppo.learning_rate: {{values: [0.0003, 0.003]}}
seeds: [0, 1, 2, 3]
metric: {{name: episodic_return, goal: maximize}}
parallelism: 2
"""


def test_results_rank_configurations_over_seeds_and_prefer_evaluation(cli, spec_file, workspace):
    result = cli("sweep", "submit", str(spec_file(SEEDS_SPEC)), "--workspace", str(workspace))
    assert result.returncode == 0, result.stdout + result.stderr
    sid = sweep_id(workspace)

    def results() -> dict:
        out = cli("sweep", "results", sid, "--json", "--workspace", str(workspace))
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    ranked = results()
    assert ranked["value"] == "episodic_return" and ranked["ranked_by"] == "iqm"
    trials = {t["index"]: t for t in ranked["trials"]}
    assert len(trials) == 8
    configs = ranked["configs"]
    assert len(configs) == 2 and [c["best"] for c in configs] == [True, False]
    for c in configs:
        assert len({str(trials[i]["params"]) for i in c["trials"]}) == 1  # one configuration
        assert c["seeds"] == [0, 1, 2, 3]
        values = np.array([trials[i]["metric"] for i in c["trials"]])
        assert c["values"] == values.tolist()
        assert c["mean"] == pytest.approx(values.mean())
        assert c["std"] == pytest.approx(values.std(ddof=1))
        assert c["iqm"] == pytest.approx(np.sort(values)[1:3].mean())  # the middle two of four
    assert configs[0]["iqm"] >= configs[1]["iqm"]
    table = cli("sweep", "results", sid, "--workspace", str(workspace)).stdout
    assert "ranked by IQM" in table and "IQM = mean" not in table
    assert "`flexrl eval RUN` every trial's run" in table

    # Evaluate every trial's run: results now rank by eval_return.
    runs = [t["run_id"] for t in ranked["trials"]]
    evaluated = {}
    for run_id in runs:
        out = cli("eval", run_id, "--episodes", "2", "--json", "--workspace", str(workspace))
        assert out.returncode == 0, out.stderr
        evaluated[run_id] = Workspace(workspace).load_run(json.loads(out.stdout)["run"])
    after = results()
    assert after["value"] == "eval_return"
    for t in after["trials"]:
        assert t["metric"] == evaluated[t["run_id"]].metrics_last["eval_return"]
    table = cli("sweep", "results", sid, "--workspace", str(workspace)).stdout
    assert "eval_return of the trials' `flexrl eval` runs" in table


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([190.6, 96.5], (190.6 + 96.5) / 2),  # two seeds: nothing trimmed, IQM = mean
        ([4.0, 1.0, 3.0, 100.0], 3.5),  # four: the middle two
        ([1, 2, 3, 4, 5, 6, 7, 1000], 4.5),  # eight: two cut from each end
        ([1, 2, 3, 4, 5], 3.0),  # five: int(1.25) = 1 from each end
    ],
)
def test_iqm_is_the_trimmed_mean_rliable_uses(values, expected):
    assert iqm(values) == pytest.approx(expected)
