"""Every manifest flexrl generates or ships validates strictly against the official
Kubernetes schemas (kubernetes-validate, offline) for 1.33 and the newest it bundles."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from flexrl.orchestrate import k8s
from flexrl.orchestrate.records import SweepStore
from flexrl.orchestrate.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
VERSIONS = ["1.33.0", kubernetes_validate.latest_version()]
SERVERS = [k8s.ServerVersion(1, 33), k8s.ServerVersion(1, 32)]  # per-index backoff, fallback


def validate(doc: dict, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.fixture
def sweep(spec_file, workspace):
    loaded = load_spec(
        spec_file(
            "name: lr\nparameters:\n  ppo.learning_rate: {values: [0.0001, 0.0003, 0.001]}\n"
            "seeds: [0, 1]\nmetric: {name: episodic_return}\nparallelism: 4\nretries: 2\n"
            "max_failed_trials: 1\nresources: {cpu: '2', memory: 3Gi, gpu: 1}\n"
        )
    )
    return loaded, SweepStore(workspace).create(loaded, "k8s")


def test_newest_schema_is_at_least_1_33():
    assert tuple(int(x) for x in VERSIONS[1].split(".")[:2]) >= (1, 33)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("server", SERVERS, ids=str)
def test_sweep_job_validates(sweep, version, server):
    loaded, record = sweep
    manifest = k8s.build_job(record, loaded.spec, k8s.job_name(record.id), server)
    validate(manifest, version)


def test_job_carries_the_sweep(sweep):
    loaded, record = sweep
    job = k8s.build_job(record, loaded.spec, k8s.job_name(record.id), k8s.ServerVersion(1, 34))
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == 6 and spec["parallelism"] == 4
    assert spec["backoffLimitPerIndex"] == 2 and spec["maxFailedIndexes"] == 1
    assert "backoffLimit" not in spec
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailIndex",
        "onExitCodes": {"containerName": "trial", "operator": "In", "values": [2]},
    }
    assert rules[1]["action"] == "Ignore"
    assert rules[1]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert spec["ttlSecondsAfterFinished"] > 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert (
        pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    )
    container = pod["containers"][0]
    assert container["command"][:4] == ["flexrl", "sweep", "run-trial", record.id]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"] == {
        "cpu": "2", "memory": "3Gi", "ephemeral-storage": "8Gi"
    }  # fmt: skip
    assert container["imagePullPolicy"] == "IfNotPresent"
    claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == "flexrl-workspace"
    for labels in (job["metadata"]["labels"], spec["template"]["metadata"]["labels"]):
        assert labels[k8s.SWEEP_LABEL] == record.id


def test_pods_are_bounded_in_time_and_disk(spec_file, workspace):
    """A hung trial ends (activeDeadlineSeconds), a trial cannot fill the node's disk
    (ephemeral-storage and the emptyDir's sizeLimit), all from the spec."""
    loaded = load_spec(
        spec_file(
            "name: lr\nmetric: {name: r}\nresources: {ephemeral_storage: 20Gi, tmp: 5Gi}\n"
            "kubernetes: {active_deadline_seconds: 3600}\n"
        )
    )
    record = SweepStore(workspace).create(loaded, "k8s")
    manifest = k8s.build_job(record, loaded.spec, "j")
    pod = manifest["spec"]["template"]["spec"]
    assert pod["activeDeadlineSeconds"] == 3600
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["ephemeral-storage"] == "20Gi"
    assert resources["limits"] == {"memory": "2Gi", "ephemeral-storage": "20Gi"}
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "5Gi"}} in pod["volumes"]
    for version in VERSIONS:
        validate(manifest, version)


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("flexrl:latest", f"flexrl@{DIGEST}"),
        ("flexrl", f"flexrl@{DIGEST}"),
        ("localhost:5000/lab/flexrl:v2", f"localhost:5000/lab/flexrl@{DIGEST}"),
        ("localhost:5000/flexrl", f"localhost:5000/flexrl@{DIGEST}"),
        (f"ghcr.io/x/flexrl@{DIGEST}", f"ghcr.io/x/flexrl@{DIGEST}"),  # already pinned
    ],
)
def test_image_is_pinned_to_its_digest_when_known(image, pinned):
    assert k8s.pinned_image(image, DIGEST) == pinned
    assert k8s.pinned_image(image, None) == image


def test_job_runs_the_spec_image_at_its_digest(spec_file, workspace):
    loaded = load_spec(
        spec_file(f"name: lr\nmetric: {{name: r}}\nkubernetes: {{image_digest: '{DIGEST}'}}\n")
    )
    record = SweepStore(workspace).create(loaded, "k8s")
    container = k8s.build_job(record, loaded.spec, "j")["spec"]["template"]["spec"]["containers"]
    assert container[0]["image"] == f"flexrl@{DIGEST}"
    explicit = k8s.build_job(record, loaded.spec, "j", image="flexrl:abc123")  # --image wins
    assert explicit["spec"]["template"]["spec"]["containers"][0]["image"] == "flexrl:abc123"


def test_old_server_falls_back_to_a_job_wide_backoff(sweep):
    loaded, record = sweep
    old = k8s.ServerVersion.parse("1", "32+")  # how managed clusters report their minor
    spec = k8s.build_job(record, loaded.spec, "j", old)["spec"]
    assert "backoffLimitPerIndex" not in spec and "maxFailedIndexes" not in spec
    assert spec["backoffLimit"] == 2 * 6
    assert spec["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
    assert "no per-index backoff" in k8s.fallback_note(old, loaded.spec, 6)
    assert k8s.fallback_note(k8s.ServerVersion(1, 33), loaded.spec, 6) is None


def test_strict_validation_rejects_a_typo(sweep):
    """The check has teeth: an unknown field anywhere fails."""
    loaded, record = sweep
    manifest = k8s.build_job(record, loaded.spec, "j")
    manifest["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(manifest, VERSIONS[0])


def shipped_manifests() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted((REPO / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion", "").startswith("kind.x-k8s.io"):
                continue  # kind's own config, not a Kubernetes API object: checked below
            docs.append((f"{path.name}:{doc['kind']}", doc))
    return docs


@pytest.mark.parametrize("version", VERSIONS)
def test_files_under_k8s_validate(version):
    docs = shipped_manifests()
    kinds = {name.split(":")[1] for name, _ in docs}
    assert {"Namespace", "PersistentVolume", "PersistentVolumeClaim"} <= kinds
    assert {"ServiceAccount", "Role", "RoleBinding"} <= kinds
    for _, doc in docs:
        validate(doc, version)


def test_storage_and_rbac_fit_the_sweep_jobs():
    docs = dict(shipped_manifests())
    claim = docs["storage.yaml:PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "flexrl-workspace"
    assert claim["metadata"]["namespace"] == docs["namespace.yaml:Namespace"]["metadata"]["name"]
    assert claim["spec"]["volumeName"] == docs["storage.yaml:PersistentVolume"]["metadata"]["name"]
    rules = docs["rbac.yaml:Role"]["rules"]
    jobs = next(r for r in rules if r["resources"] == ["jobs"])
    assert {"create", "get", "list", "delete"} <= set(jobs["verbs"])
    assert any(r["resources"] == ["pods/log"] for r in rules)


def test_kind_config_mounts_the_workspace():
    """kind's Cluster config has no Kubernetes schema; its shape is checked by hand."""
    config = yaml.safe_load((REPO / "k8s" / "kind-cluster.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    mounts = [m for node in config["nodes"] for m in node.get("extraMounts", [])]
    assert {"hostPath": "./workspace", "containerPath": "/workspace"} in mounts
    pv = dict(shipped_manifests())["storage.yaml:PersistentVolume"]
    assert pv["spec"]["hostPath"]["path"] == "/workspace"  # the PV is that mount


@pytest.mark.parametrize("server", ["1.33", "1.30"])
def test_dry_run_prints_valid_manifests(cli, workspace, server):
    spec = REPO / "recipes" / "sweep_quickstart.yaml"
    result = cli(
        "sweep", "submit", str(spec), "--backend", "k8s", "--dry-run",
        "--server-version", server, "--image", "flexrl:abc123", "--workspace", str(workspace),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert len(docs) == 1 and docs[0]["kind"] == "Job"
    assert docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "flexrl:abc123"
    for version in VERSIONS:
        validate(docs[0], version)
    assert ("no per-index backoff" in result.stderr) == (server == "1.30")
    assert not workspace.exists()
