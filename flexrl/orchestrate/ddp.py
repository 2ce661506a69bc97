"""Distributed finetuning on Kubernetes: an Indexed Job of N pods training one model with DDP,
and a headless Service through which they meet.

Pod i of Job J runs the same `flexrl finetune` command with `train.num_nodes=N`. The Job
gives it its rank (the completion index, as NODE_RANK) and the others' meeting point: pod 0's
stable name `J-0.J` (an Indexed Job's pods get hostnames `J-<index>`; with `subdomain: J` the
headless Service `J` publishes them in DNS, ready or not, so rank 0 is found as soon as it
runs). Lightning reads MASTER_ADDR, MASTER_PORT, NODE_RANK and LOCAL_RANK from the environment
and starts no process of its own. DDP cannot lose a member, so the Job has no retries: a
failed pod fails the Job (and `--resume` continues the run from its last checkpoint).
"""

from __future__ import annotations

from typing import Any

from flexrl.orchestrate.k8s import container_spec, pinned_image, pod_spec
from flexrl.orchestrate.spec import KubernetesOptions, Resources

PORT = 29500
COMPONENT = "finetune-ddp"
JOB_LABEL = "flexrl.io/ddp-job"


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "flexrl",
        "app.kubernetes.io/component": COMPONENT,
        JOB_LABEL: name,
    }


def build_ddp(
    name: str,
    command: list[str],
    pods: int,
    devices: int,
    k8s: KubernetesOptions,
    resources: Resources,
    image: str | None = None,
) -> list[dict[str, Any]]:
    """[headless Service, Indexed Job] for `command` (a flexrl argv) run by `pods` pods of
    `devices` processes each (one per GPU; on CPU, 1)."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": k8s.namespace, "labels": labels(name)},
        "spec": {
            "clusterIP": "None",  # headless: DNS names for the pods, no load balancing
            "publishNotReadyAddresses": True,  # rank 0 is needed before anything is "ready"
            "selector": {JOB_LABEL: name},
            "ports": [{"name": "rendezvous", "port": PORT, "targetPort": PORT}],
        },
    }
    container = container_spec(
        k8s, resources, image or pinned_image(k8s.image, k8s.image_digest), command
    )
    index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    container["env"] += [
        {"name": "MASTER_ADDR", "value": f"{name}-0.{name}"},
        {"name": "MASTER_PORT", "value": str(PORT)},
        {"name": "WORLD_SIZE", "value": str(pods * devices)},
        {"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": index}}},
    ]
    if devices == 1:  # the pod is the process; with several GPUs Lightning starts one each
        container["env"].append({"name": "LOCAL_RANK", "value": "0"})
    container["ports"] = [{"name": "rendezvous", "containerPort": PORT}]
    spec = pod_spec(k8s, resources, container)
    spec["subdomain"] = name
    exit_2 = {"containerName": container["name"], "operator": "In", "values": [2]}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": k8s.namespace, "labels": labels(name)},
        "spec": {
            "completionMode": "Indexed",
            "completions": pods,
            "parallelism": pods,  # all at once: DDP waits for every rank
            "backoffLimit": 0,
            "podFailurePolicy": {
                "rules": [{"action": "FailJob", "onExitCodes": exit_2}],
            },
            "ttlSecondsAfterFinished": k8s.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels(name)}, "spec": spec},
        },
    }
    return [service, job]
