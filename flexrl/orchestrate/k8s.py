"""The Kubernetes backend: one `batch/v1` Indexed Job per sweep, through the official client.

Index i of the Job runs `flexrl sweep run-trial <id>` (the index comes from
JOB_COMPLETION_INDEX), exactly what the local pool runs, with the workspace on a
PersistentVolumeClaim so trial records, runs and checkpoints land where `status` reads them.

The Job carries the sweep's limits: `backoffLimitPerIndex` = retries, `maxFailedIndexes` =
max_failed_trials, and a podFailurePolicy that fails an index at once on exit code 2 (bad
input is never retried) and ignores `DisruptionTarget` (preemption, eviction, drain: the pod
is replaced without using up a retry, and the trial resumes from its last checkpoint).

Per-index backoff is GA (on by default) only from Kubernetes 1.33. On an older server the
Job falls back to one `backoffLimit` for the whole Job (retries x trials) and the exit-2 rule
becomes FailJob: a bad parameter then stops the whole sweep rather than its index, which is
the only way to keep it from being retried. `submit` says so when it happens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from flexrl.errors import FlexrlError
from flexrl.orchestrate.records import SweepRecord, TrialState, TrialStateName
from flexrl.orchestrate.spec import KubernetesOptions, Resources, SweepSpec

CONTAINER = "trial"
SWEEP_LABEL = "flexrl.io/sweep"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
PER_INDEX_BACKOFF_SINCE = (1, 33)


# -- the server version ----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerVersion:
    major: int
    minor: int

    @classmethod
    def parse(cls, major: str, minor: str) -> ServerVersion:
        """From VersionInfo's strings; managed clusters report minors like "32+"."""
        try:
            return cls(int(re.sub(r"\D", "", major)), int(re.sub(r"\D", "", minor)))
        except ValueError:
            raise FlexrlError(f"cannot read the server version {major}.{minor}") from None

    @property
    def per_index_backoff(self) -> bool:
        return (self.major, self.minor) >= PER_INDEX_BACKOFF_SINCE

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


LATEST = ServerVersion(*PER_INDEX_BACKOFF_SINCE)


# -- manifests -------------------------------------------------------------------------------


def job_name(sweep_id: str, attempt: int = 0) -> str:
    """`flexrl-<id>` for the submission, `flexrl-<id>-r<n>` for the n-th resume."""
    return f"flexrl-{sweep_id}" + (f"-r{attempt}" if attempt else "")


def labels(sweep_id: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "flexrl",
        "app.kubernetes.io/component": "sweep-trial",
        SWEEP_LABEL: sweep_id,
    }


def build_job(
    record: SweepRecord,
    spec: SweepSpec,
    name: str,
    version: ServerVersion = LATEST,
    image: str | None = None,
) -> dict[str, Any]:
    """The Job manifest, as a plain dict in the API's own field names."""
    k8s = spec.kubernetes
    mount = k8s.workspace_mount
    container = container_spec(
        k8s,
        spec.resources,
        image or pinned_image(k8s.image, k8s.image_digest),
        ["flexrl", "sweep", "run-trial", record.id, "--workspace", mount],
    )
    exit_2 = {"containerName": CONTAINER, "operator": "In", "values": [2]}
    rules: list[dict[str, Any]] = [
        {"action": "FailIndex" if version.per_index_backoff else "FailJob", "onExitCodes": exit_2},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": record.num_trials,
        "parallelism": min(spec.parallelism, record.num_trials),
        "podFailurePolicy": {"rules": rules},
        # A replacement pod starts only once the old one is gone: one writer per trial record.
        "podReplacementPolicy": "Failed",
        "ttlSecondsAfterFinished": k8s.ttl_seconds_after_finished,
    }
    if version.per_index_backoff:
        job_spec["backoffLimitPerIndex"] = spec.retries
        if spec.max_failed_trials is not None:
            job_spec["maxFailedIndexes"] = min(spec.max_failed_trials, record.num_trials)
    else:
        job_spec["backoffLimit"] = spec.retries * record.num_trials
    job_spec["template"] = {
        "metadata": {"labels": labels(record.id)},
        "spec": pod_spec(k8s, spec.resources, container),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": k8s.namespace,
            "labels": labels(record.id),
            "annotations": {
                "flexrl.io/spec-hash": record.spec_hash,
                "flexrl.io/backoff": "per-index" if version.per_index_backoff else "whole-job",
            },
        },
        "spec": job_spec,
    }


def container_spec(
    k8s: KubernetesOptions, want: Resources, image: str, command: list[str]
) -> dict[str, Any]:
    """The flexrl container of a pod: its command, bounded resources, a read-only root, the
    workspace volume and /tmp mounted."""
    mount = k8s.workspace_mount
    capped = {"memory": want.memory, "ephemeral-storage": want.ephemeral_storage}  # requested too
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": want.cpu, **capped}, "limits": dict(capped)
    }  # fmt: skip
    if want.gpu:
        resources["limits"]["nvidia.com/gpu"] = str(want.gpu)
    # Object storage credentials stay in their Secret: the manifest names it, never a value.
    env_from = [{"secretRef": {"name": k8s.storage_secret}}] if k8s.storage_secret else []
    return {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": k8s.image_pull_policy,
        "command": command,
        "env": [
            {"name": "FLEXRL_WORKSPACE", "value": mount},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "HOME", "value": "/tmp"},  # caches (matplotlib, torch) on the emptyDir
        ],
        **({"envFrom": env_from} if env_from else {}),
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "workspace", "mountPath": mount},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def pod_spec(k8s: KubernetesOptions, want: Resources, container: dict[str, Any]) -> dict[str, Any]:
    """A flexrl pod: never restarted in place, bounded in time, non-root, no API token."""
    return {
        "restartPolicy": "Never",  # required by podFailurePolicy
        "activeDeadlineSeconds": k8s.active_deadline_seconds,  # a hung pod ends
        "automountServiceAccountToken": False,  # flexrl pods never talk to the API server
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": k8s.run_as_user,
            "runAsGroup": k8s.run_as_user,
            "fsGroup": k8s.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "workspace", "persistentVolumeClaim": {"claimName": k8s.workspace_claim}},
            {"name": "tmp", "emptyDir": {"sizeLimit": want.tmp}},
        ],
    }


def pinned_image(image: str, digest: str | None) -> str:
    """The image at its digest when one is known ("flexrl:v1" -> "flexrl@sha256:..."): a
    mutable tag can point at another build by the time a pod pulls it."""
    if digest is None or "@" in image:
        return image
    name, _, last = image.rpartition("/")
    repository = last.split(":", 1)[0]  # a registry's port ("host:5000/x") is before the "/"
    return f"{name}/{repository}@{digest}" if name else f"{repository}@{digest}"


def fallback_note(version: ServerVersion, spec: SweepSpec, trials: int) -> str | None:
    if version.per_index_backoff:
        return None
    return (
        f"Kubernetes {version} has no per-index backoff (GA in 1.33): the Job uses "
        f"backoffLimit={spec.retries * trials} for all trials together, ignores "
        "max_failed_trials, and a bad-input exit 2 fails the whole sweep (FailJob)"
    )


def to_yaml(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False)


# -- status ----------------------------------------------------------------------------------


def parse_indexes(text: str | None) -> set[int]:
    """The API's interval lists ("1,3-5,7") as a set of indexes."""
    result: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            result.update(range(int(low), int(high or low) + 1))
        except ValueError:
            raise FlexrlError(f"cannot read the index list {text!r}") from None
    return result


@dataclass
class JobView:
    name: str
    active: int
    succeeded: int
    failed: int
    completed_indexes: set[int]
    failed_indexes: set[int]
    # Complete or Failed, only from a condition with status "True" (counts can change until
    # then: a Job with FailureTarget is still terminating its pods).
    terminal: str | None
    reason: str | None

    @classmethod
    def from_job(cls, job: Any) -> JobView:
        status = job.status
        terminal = reason = None
        for cond in status.conditions or []:
            if cond.type in ("Complete", "Failed") and cond.status == "True":
                terminal = cond.type
                reason = ": ".join(x for x in (cond.reason, cond.message) if x) or None
        return cls(
            name=job.metadata.name,
            active=status.active or 0,
            succeeded=status.succeeded or 0,
            failed=status.failed or 0,
            completed_indexes=parse_indexes(status.completed_indexes),
            failed_indexes=parse_indexes(status.failed_indexes),
            terminal=terminal,
            reason=reason,
        )


@dataclass
class PodView:
    name: str
    index: int | None
    phase: str
    exit_code: int | None
    reason: str | None
    disrupted: bool

    @classmethod
    def from_pod(cls, pod: Any) -> PodView:
        annotations = pod.metadata.annotations or {}
        index_text = annotations.get(INDEX_ANNOTATION)
        exit_code = reason = None
        for cs in (pod.status.container_statuses or []) if pod.status else []:
            if cs.name != CONTAINER or cs.state is None:
                continue
            if cs.state.terminated is not None:
                exit_code = cs.state.terminated.exit_code
                reason = cs.state.terminated.reason
            elif cs.state.waiting is not None:
                reason = cs.state.waiting.reason  # ImagePullBackOff, CrashLoopBackOff, ...
        disrupted = any(
            c.type == "DisruptionTarget" and c.status == "True"
            for c in (pod.status.conditions or [] if pod.status else [])
        )
        return cls(
            name=pod.metadata.name,
            index=int(index_text) if index_text is not None else None,
            phase=(pod.status.phase if pod.status else None) or "Unknown",
            exit_code=exit_code,
            reason=reason,
            disrupted=disrupted,
        )


@dataclass
class TrialView:
    index: int
    state: str
    attempts: int
    metric: float | None
    detail: str | None = None


@dataclass
class SweepView:
    trials: list[TrialView]
    job: JobView | None = None
    notes: list[str] = field(default_factory=list)


def merge(states: list[TrialState], jobs: list[JobView], pods: list[PodView]) -> list[TrialView]:
    """Trial records (the shared volume) joined with what Kubernetes says.

    The Job's index lists are the source of truth for done and failed indexes; the records
    add attempts and the metric; pods say what is running or waiting now (a pod stuck on
    ImagePullBackOff never writes a record).
    """
    job = jobs[-1] if jobs else None
    views = []
    for s in states:
        state = s.state.value
        detail = s.error
        if job is not None:
            live = [p for p in pods if p.index == s.index and p.phase in ("Pending", "Running")]
            if s.index in job.completed_indexes or any(
                s.index in j.completed_indexes for j in jobs
            ):
                state = TrialStateName.SUCCEEDED.value
            elif s.index in job.failed_indexes:
                state = TrialStateName.FAILED.value
            elif live:
                pod = live[-1]
                state = "running" if pod.phase == "Running" else "pending"
                detail = pod.reason or detail
            elif job.terminal == "Failed" and s.state != TrialStateName.SUCCEEDED:
                # Whole-job failure (FailJob, backoffLimit): remaining indexes never ran.
                state = TrialStateName.FAILED.value if s.attempts else "not run"
                detail = job.reason
        views.append(TrialView(s.index, state, len(s.attempts), s.metric, detail))
    return views


# -- the API ---------------------------------------------------------------------------------
