"""The DDP finetune Job (`flexrl finetune dt --pods N`): a headless Service and an Indexed Job,
validated against the official schemas. The pods' command and environment are run for real in
tests/offline/test_ddp.py; what is not covered is a cluster (DNS, the network between pods)."""

from __future__ import annotations

import pytest
import yaml

from tests.orchestrate.test_k8s_manifests import REPO, VERSIONS, validate


@pytest.fixture
def manifests(cli, workspace):
    from tests.offline.conftest import write_dataset

    write_dataset(workspace, "walk")
    result = cli(
        "finetune", "dt", "--config", str(REPO / "recipes/finetune_dt.yaml"), "--dataset",
        "walk", "--pods", "3", "--dry-run", "--image", "flexrl:abc", "--namespace", "lab",
        "--storage-secret", "s3-creds", "--workspace", str(workspace),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


@pytest.mark.parametrize("version", VERSIONS)
def test_service_and_job_validate(manifests, version):
    for doc in manifests:
        validate(doc, version)


def test_pods_find_rank_0_through_the_headless_service(manifests, workspace):
    service, job = manifests
    name = job["metadata"]["name"]
    assert service["metadata"]["name"] == name and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    template = job["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert template["spec"]["subdomain"] == name  # pods are <name>-<index>.<name>
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 3
    assert spec["backoffLimit"] == 0  # DDP cannot lose a member
    container = template["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MASTER_ADDR"]["value"] == f"{name}-0.{name}"
    assert env["WORLD_SIZE"]["value"] == "3" and env["LOCAL_RANK"]["value"] == "0"
    index = env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert container["image"] == "flexrl:abc" and job["metadata"]["namespace"] == "lab"
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]  # for s3:// datasets
    command = container["command"]
    assert command[:3] == ["flexrl", "finetune", "dt"] and "walk@v1" in command
    assert command[command.index("--config") + 1] == f"/workspace/jobs/{name}/recipe.yaml"
    assert not (workspace / "jobs").exists()  # a dry run writes nothing


def test_pods_without_a_cluster_record_nothing(cli, workspace):
    from tests.offline.conftest import write_dataset

    write_dataset(workspace, "walk")
    result = cli(
        "finetune", "bc", "--config", str(REPO / "recipes/finetune_bc.yaml"), "--dataset",
        "walk", "--pods", "2", "--workspace", str(workspace), env={"KUBECONFIG": "/nonexistent"},
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert not (workspace / "jobs").exists() and not (workspace / "runs").exists()
