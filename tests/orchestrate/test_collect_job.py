"""Collection as a Kubernetes Indexed Job (`flexrl collect --pods N`, or a sweep with `command:
collect`): N pods write into one dataset, each from its own block of episode seeds. The Job is
validated against the official schemas; the pods themselves are run here as the local backend
runs sweep trials (real `flexrl collect` processes into one dataset). Not covered: a real API
server and pods sharing a ReadWriteMany volume."""

from __future__ import annotations

import pytest
import yaml

from flexrl.errors import FlexrlError
from flexrl.orchestrate.records import SweepStore
from flexrl.orchestrate.spec import load_spec
from flexrl.store import open_dataset
from tests.orchestrate.test_k8s_manifests import VERSIONS, validate

PENDULUM = ("--policy", "random", "--env-id", "InvertedPendulum-v5")


def test_collect_pods_dry_run_prints_a_valid_job_and_distinct_seeds(cli, workspace):
    result = cli(
        "collect", *PENDULUM, "--dataset", "pend", "--episodes", "40", "--seed", "7",
        "--pods", "3", "--dry-run", "--image", "flexrl:abc", "--workspace", str(workspace),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (job,) = list(yaml.safe_load_all(result.stdout))
    for version in VERSIONS:
        validate(job, version)
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "flexrl:abc"
    pods = [line for line in result.stderr.splitlines() if line.startswith("pod ")]
    assert len(pods) == 3
    for i, line in enumerate(pods):
        assert "collect --policy random" in line and "--dataset pend --episodes 40" in line
        assert line.endswith(f"--seed {7 + 40 * i}")  # blocks of 40 seeds: no episode twice
    assert not workspace.exists()  # a dry run records nothing


def test_collect_pods_into_object_storage_take_credentials_from_a_secret(cli, workspace):
    uri = "s3://lab-bucket/flexrl/pend"
    result = cli(
        "collect", *PENDULUM, "--dataset", uri, "--episodes", "5", "--seed", "0", "--pods", "2",
        "--storage-secret", "s3-creds", "--dry-run", "--workspace", str(workspace),
        env={"AWS_SECRET_ACCESS_KEY": "do-not-print-me"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (job,) = list(yaml.safe_load_all(result.stdout))
    for version in VERSIONS:
        validate(job, version)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]  # named, not copied
    assert "do-not-print-me" not in result.stdout + result.stderr
    assert f"--dataset {uri}" in result.stderr


def test_collect_pods_needs_a_cluster_and_records_nothing(cli, workspace):
    result = cli(
        "collect", *PENDULUM, "--dataset", "pend", "--episodes", "4", "--pods", "2",
        "--workspace", str(workspace), env={"KUBECONFIG": "/nonexistent"},
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert not (workspace / "sweeps").exists()


def test_collect_seeds_that_overlap_are_a_spec_error(spec_file):
    body = (
        "name: c\ncommand: collect\nrecipe: null\nargs: {policy: random, dataset: d, "
        "episodes: 10}\nseeds: [0, 5]\nmetric: {name: episodes}\n"
    )
    with pytest.raises(FlexrlError, match=r"space seeds at least 10 apart, e.g. \[0, 10\]"):
        load_spec(spec_file(body))
    load_spec(spec_file(body.replace("[0, 5]", "[0, 10]")))


def test_collect_trials_write_one_dataset_from_distinct_seeds(cli, spec_file, workspace):
    spec = spec_file(
        "name: pend\ncommand: collect\nrecipe: null\n"
        "args: {policy: random, env-id: InvertedPendulum-v5, dataset: pend, episodes: 3}\n"
        "seeds: [100, 103, 106]\nmetric: {name: episodes}\nparallelism: 3\n"
    )
    result = cli("sweep", "submit", str(spec), "--workspace", str(workspace))
    assert result.returncode == 0, result.stdout + result.stderr
    dataset = open_dataset("pend", workspace)
    assert dataset.version == 3 and len(dataset) == 9  # one version per pod, nothing lost
    assert sorted(dataset.index.seeds.tolist()) == list(range(100, 109))
    (sid,) = SweepStore(workspace).list_ids()
    status = cli("sweep", "status", sid, "--workspace", str(workspace))
    assert status.returncode == 0 and "3 succeeded" in status.stdout, status.stdout
