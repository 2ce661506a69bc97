"""Sweep specs: validated like recipes (one line naming the key, exit 2), expanded into trials."""

from __future__ import annotations

import pytest

from flexrl.errors import FlexrlError
from flexrl.orchestrate.spec import load_spec


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_grid_times_seeds(spec_file):
    loaded = load_spec(
        spec_file(
            "name: g\nparameters:\n  ppo.learning_rate: {values: [0.1, 0.2]}\n"
            "  ppo.clip_coef: {values: [0.1, 0.2, 0.3]}\n  ppo.gamma: {value: 0.9}\n"
            "seeds: [0, 1]\nmetric: {name: episodic_return}\n"
        )
    )
    assert len(loaded.trials) == 2 * 3 * 2
    assert [t.index for t in loaded.trials] == list(range(12))
    assert loaded.trials[0].params == {
        "ppo.learning_rate": 0.1,
        "ppo.clip_coef": 0.1,
        "ppo.gamma": 0.9,
    }
    assert {t.seed for t in loaded.trials if t.config == 0} == {0, 1}


def test_random_search_is_seeded_and_within_bounds(spec_file):
    body = (
        "name: r\nmethod: random\ncount: 5\nparameters:\n"
        "  ppo.learning_rate: {distribution: log_uniform, min: 1.0e-5, max: 1.0e-3}\n"
        "  ppo.num_minibatches: {distribution: int_uniform, min: 2, max: 8}\n"
        "  ppo.clip_coef: {values: [0.1, 0.2]}\nmetric: {name: episodic_return}\n"
    )
    first, again = load_spec(spec_file(body)), load_spec(spec_file(body, "again.yaml"))
    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert len(first.trials) == 5
    for t in first.trials:
        assert 1e-5 <= t.params["ppo.learning_rate"] <= 1e-3
        assert isinstance(t.params["ppo.num_minibatches"], int)
        assert 2 <= t.params["ppo.num_minibatches"] <= 8


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("name: x\nmetric: {name: r, goal: maximise}\n", "metric.goal"),
        ("name: x\nmetric: {name: r}\nparallelism: 0\n", "parallelism"),
        (
            "name: x\nmetric: {name: r}\nretrys: 1\n",
            "retrys: unknown key (did you mean 'retries'?)",
        ),
        ("name: Bad_Name\nmetric: {name: r}\n", "name"),
        (
            "name: x\nmetric: {name: r}\nparameters:\n"
            "  ppo.clip_coef: {distribution: uniform, min: 0, max: 1}\n",
            "distributions need method: random",
        ),
        ("name: x\nmethod: random\nmetric: {name: r}\n", "needs `count`"),
        (
            "name: x\nmetric: {name: r}\nparameters:\n  ppo.learning_rat: {values: [0.1]}\n",
            "trial 0: ppo.learning_rat: unknown key",
        ),
        (
            "name: x\nmetric: {name: r}\nparameters:\n  ppo.num_steps: {values: [abc]}\n",
            "trial 0: ppo.num_steps",
        ),
        (
            "name: x\nmetric: {name: r}\nresources: {cpu: lots}\n",
            "resources.cpu: value error, 'lots' is not a Kubernetes quantity",
        ),
        ("name: x\nmetric: {name: r}\nresources: {memory: 2GB}\n", "resources.memory"),
        ("name: x\nmetric: {name: r}\nresources: {cpu: '0'}\n", "must be more than zero"),
        (
            "name: x\nmetric: {name: r}\nresources: {ephemeral_storage: 1Gi, tmp: 2Gi}\n",
            "tmp (2Gi) must fit in ephemeral_storage (1Gi)",
        ),
        (
            "name: x\nmetric: {name: r}\nkubernetes: {image_digest: abc}\n",
            "kubernetes.image_digest",
        ),
        (
            "name: x\nmetric: {name: r}\nkubernetes: {active_deadline_seconds: 0}\n",
            "active_deadline_seconds",
        ),
    ],
)
def test_bad_specs_fail_naming_the_key(spec_file, body, fragment):
    with pytest.raises(FlexrlError) as info:
        load_spec(spec_file(body))
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_spec_on_the_command_line_exits_2_and_records_nothing(cli, spec_file, workspace):
    path = spec_file("name: x\nmetric: {name: r}\nparameters:\n  ppo.gama: {values: [0.9]}\n")
    result = cli("sweep", "submit", str(path), "--workspace", str(workspace))
    assert_one_line_error(result, "ppo.gama: unknown key", "gamma")
    assert not workspace.exists()
    path = spec_file("name: x\nmetric: {name: r}\nresources: {cpu: lots}\n")
    result = cli("sweep", "submit", str(path), "--backend", "k8s", "--workspace", str(workspace))
    assert_one_line_error(result, "resources.cpu", "not a Kubernetes quantity")
    assert not workspace.exists()
    result = cli("sweep", "submit", "missing.yaml", "--workspace", str(workspace))
    assert_one_line_error(result, "sweep spec not found: missing.yaml")
    result = cli("sweep", "status", "nope", "--workspace", str(workspace))
    assert_one_line_error(result, "unknown sweep: 'nope'")


def test_example_spec_in_recipes_is_valid():
    from pathlib import Path

    loaded = load_spec(Path(__file__).resolve().parents[2] / "recipes" / "sweep_quickstart.yaml")
    assert len(loaded.trials) == 8 and loaded.spec.metric.goal == "maximize"


def test_local_dry_run_lists_trials_and_records_nothing(cli, spec_file, workspace):
    path = spec_file(
        "name: d\nparameters:\n  ppo.gamma: {values: [0.9, 0.99]}\nmetric: {name: r}\n"
    )
    result = cli("sweep", "submit", str(path), "--dry-run", "--workspace", str(workspace))
    assert result.returncode == 0, result.stderr
    assert "d: 2 trials" in result.stdout and "ppo.gamma=0.99" in result.stdout
    assert not workspace.exists()
