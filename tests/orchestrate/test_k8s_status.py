"""Sweep status from Job and Pod objects shaped exactly as the API server returns them.

No Kubernetes API server can run on these machines, so the objects are JSON written the way
`kubectl get job -o json` prints them and deserialised with the client's own
ApiClient.deserialize, the same call the client makes on a real response body.
"""

from __future__ import annotations

import copy
import json

import pytest
from kubernetes.client import ApiClient

from flexrl.errors import FlexrlError
from flexrl.orchestrate import k8s
from flexrl.orchestrate.records import Attempt, TrialState, TrialStateName

SWEEP = "lr-3fa9c1"
STARTED = "2026-05-01T10:00:00Z"


def api_job(status: dict) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"flexrl-{SWEEP}",
            "namespace": "flexrl",
            "uid": "0b7f1c3e-8f1e-4c7a-9b1a-1d2e3f4a5b6c",
            "resourceVersion": "48213",
            "generation": 1,
            "creationTimestamp": STARTED,
            "labels": {"app.kubernetes.io/name": "flexrl", k8s.SWEEP_LABEL: SWEEP},
            "annotations": {"flexrl.io/backoff": "per-index"},
        },
        "spec": {
            "parallelism": 2,
            "completions": 4,
            "backoffLimit": 2147483647,
            "backoffLimitPerIndex": 1,
            "maxFailedIndexes": 2,
            "completionMode": "Indexed",
            "suspend": False,
            "podReplacementPolicy": "Failed",
            "manualSelector": False,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "0b7f1c3e"}},
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailIndex",
                        "onExitCodes": {"containerName": "trial", "operator": "In", "values": [2]},
                    },
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {
                "metadata": {"labels": {k8s.SWEEP_LABEL: SWEEP}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "trial", "image": "flexrl:abc"}],
                },
            },
        },
        "status": status,
    }


def condition(type_: str, reason: str, message: str = "") -> dict:
    return {
        "type": type_,
        "status": "True",
        "lastProbeTime": "2026-05-01T10:05:00Z",
        "lastTransitionTime": "2026-05-01T10:05:00Z",
        "reason": reason,
        "message": message,
    }


def api_pod(
    index: int, phase: str, *, exit_code: int | None = None, disrupted: bool = False
) -> dict:
    state: dict
    if exit_code is not None:
        state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "startedAt": STARTED,
                "finishedAt": "2026-05-01T10:01:00Z",
                "containerID": "containerd://abc",
            }
        }
    elif phase == "Pending":
        state = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
    else:
        state = {"running": {"startedAt": STARTED}}
    conditions = [{"type": "Ready", "status": "True", "lastTransitionTime": STARTED}]
    if disrupted:
        conditions.append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "lastTransitionTime": STARTED,
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"flexrl-{SWEEP}-{index}-x7k2p",
            "namespace": "flexrl",
            "creationTimestamp": STARTED,
            "labels": {
                k8s.SWEEP_LABEL: SWEEP,
                "batch.kubernetes.io/job-completion-index": str(index),
                "job-name": f"flexrl-{SWEEP}",
            },
            "annotations": {k8s.INDEX_ANNOTATION: str(index)},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "trial", "image": "flexrl:abc"}],
        },
        "status": {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": "trial",
                    "image": "flexrl:abc",
                    "imageID": "",
                    "ready": phase == "Running",
                    "restartCount": 0,
                    "started": phase == "Running",
                    "state": state,
                }
            ],
        },
    }


def deserialize(obj: dict, kind: str):
    return ApiClient().deserialize(json.dumps(obj), kind, "application/json")


def job_view(status: dict) -> k8s.JobView:
    return k8s.JobView.from_job(deserialize(api_job(status), "V1Job"))


def pods(*objs: dict) -> list[k8s.PodView]:
    listing = {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": list(objs)}
    return [k8s.PodView.from_pod(p) for p in deserialize(listing, "V1PodList").items]


def states(*names: str) -> list[TrialState]:
    out = []
    for i, name in enumerate(names):
        attempts = (
            [Attempt(n=1, started_at=STARTED, log="attempt-1.log")] if name != "pending" else []
        )
        metric = float(i) if name == "succeeded" else None
        out.append(
            TrialState(index=i, state=TrialStateName(name), attempts=attempts, metric=metric)
        )
    return out


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", set()), (None, set()), ("3", {3}), ("1,3-5", {1, 3, 4, 5}), ("0-2,7", {0, 1, 2, 7})],
)
def test_index_ranges(text, expected):
    assert k8s.parse_indexes(text) == expected


def test_bad_index_range_is_an_error():
    with pytest.raises(FlexrlError):
        k8s.parse_indexes("1,a-3")


def test_running():
    job = job_view(
        {
            "startTime": STARTED,
            "active": 2,
            "ready": 1,
            "terminating": 0,
            "succeeded": 1,
            "completedIndexes": "0",
            "uncountedTerminatedPods": {},
        }
    )
    assert job.terminal is None and job.active == 2 and job.completed_indexes == {0}
    views = k8s.merge(
        states("succeeded", "running", "pending", "pending"),
        [job],
        pods(api_pod(0, "Succeeded", exit_code=0), api_pod(1, "Running"), api_pod(2, "Pending")),
    )
    assert [v.state for v in views] == ["succeeded", "running", "pending", "pending"]
    assert views[2].detail == "ImagePullBackOff"  # a pod that cannot start says why
    assert views[0].metric == 0.0


def test_partly_failed_is_not_terminal_until_the_condition():
    job = job_view(
        {
            "startTime": STARTED,
            "active": 1,
            "ready": 1,
            "terminating": 0,
            "succeeded": 2,
            "failed": 2,
            "completedIndexes": "0,2",
            "failedIndexes": "1",
            "uncountedTerminatedPods": {},
        }
    )
    assert job.terminal is None and job.failed_indexes == {1}
    views = k8s.merge(
        states("succeeded", "failed", "succeeded", "running"),
        [job],
        pods(api_pod(1, "Failed", exit_code=2), api_pod(3, "Running", disrupted=False)),
    )
    assert [v.state for v in views] == ["succeeded", "failed", "succeeded", "running"]
    failed_pod = pods(api_pod(1, "Failed", exit_code=2))[0]
    assert failed_pod.index == 1 and failed_pod.exit_code == 2 and failed_pod.reason == "Error"


def test_complete():
    status = {
        "startTime": STARTED,
        "completionTime": "2026-05-01T10:09:00Z",
        "succeeded": 4,
        "completedIndexes": "0-3",
        "terminating": 0,
        "ready": 0,
        "uncountedTerminatedPods": {},
        "conditions": [
            condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ),
            condition(
                "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
            ),
        ],
    }
    job = job_view(status)
    assert job.terminal == "Complete" and job.completed_indexes == {0, 1, 2, 3}
    # The records may lag (a pod gone before its last write): the Job's index list wins.
    views = k8s.merge(states("succeeded", "succeeded", "running", "succeeded"), [job], [])
    assert {v.state for v in views} == {"succeeded"}


def test_failed_with_per_index_limits():
    status = {
        "startTime": STARTED,
        "succeeded": 1,
        "failed": 4,
        "completedIndexes": "0",
        "failedIndexes": "1-3",
        "terminating": 0,
        "ready": 0,
        "uncountedTerminatedPods": {},
        "conditions": [
            condition(
                "FailureTarget", "MaxFailedIndexesExceeded", "Job has exceeded maxFailedIndexes"
            ),
            condition("Failed", "MaxFailedIndexesExceeded", "Job has exceeded maxFailedIndexes"),
        ],
    }
    job = job_view(status)
    assert job.terminal == "Failed" and "MaxFailedIndexesExceeded" in (job.reason or "")
    views = k8s.merge(states("succeeded", "failed", "failed", "interrupted"), [job], [])
    assert [v.state for v in views] == ["succeeded", "failed", "failed", "failed"]


def test_failure_target_alone_is_not_terminal():
    status = {
        "startTime": STARTED,
        "active": 1,
        "failed": 1,
        "terminating": 1,
        "failedIndexes": "2",
        "uncountedTerminatedPods": {},
        "conditions": [condition("FailureTarget", "PodFailurePolicy", "Container trial exited 2")],
    }
    assert job_view(status).terminal is None


def test_whole_job_failure_on_an_old_server():
    """Fallback (no per-index backoff): FailJob on exit 2 ends every index; unstarted ones
    are reported as never run."""
    status = {
        "startTime": STARTED,
        "succeeded": 1,
        "failed": 1,
        "completedIndexes": "0",
        "uncountedTerminatedPods": {},
        "conditions": [
            condition(
                "Failed", "PodFailurePolicy", "Container trial for pod x failed with exit code 2"
            )
        ],
    }
    views = k8s.merge(states("succeeded", "failed", "pending", "pending"), [job_view(status)], [])
    assert [v.state for v in views] == ["succeeded", "failed", "not run", "not run"]
    assert "exit code 2" in (views[2].detail or "")


def test_preempted_pod_is_seen_as_a_disruption():
    pod = pods(api_pod(3, "Failed", exit_code=143, disrupted=True))[0]
    assert pod.disrupted and pod.exit_code == 143


def test_server_versions():
    info = deserialize(  # GET /version of a managed cluster, verbatim in shape
        {
            "major": "1",
            "minor": "32+",
            "emulationMajor": "1",
            "emulationMinor": "32",
            "minCompatibilityMajor": "1",
            "minCompatibilityMinor": "31",
            "gitVersion": "v1.32.4-gke.1415000",
            "gitCommit": "6c2a9c9bc2c3c1ce2b4b7a4b2e0b1f1a2c3d4e5f",
            "gitTreeState": "clean",
            "buildDate": "2025-05-01T09:12:33Z",
            "goVersion": "go1.23.8 X:boringcrypto",
            "compiler": "gc",
            "platform": "linux/amd64",
        },
        "VersionInfo",
    )
    version = k8s.ServerVersion.parse(info.major, info.minor)
    assert str(version) == "1.32" and not version.per_index_backoff
    assert k8s.ServerVersion.parse("1", "33").per_index_backoff


def test_deserialisation_keeps_what_the_api_sent():
    obj = api_job({"completedIndexes": "1,3-5", "failedIndexes": "2"})
    job = deserialize(copy.deepcopy(obj), "V1Job")
    assert job.status.completed_indexes == "1,3-5"
    assert job.spec.pod_failure_policy.rules[0].on_exit_codes.values == [2]
