"""The Kubernetes API, through the official client: Jobs, Services, pods and logs, with every
error turned into one line (a FlexrlError) naming what was being done."""

from __future__ import annotations

import json
from typing import Any

from flexrl.errors import FlexrlError
from flexrl.orchestrate.k8s import CONTAINER, SWEEP_LABEL, ServerVersion


class KubeClient:
    """Thin wrapper over the official client, turning its errors into one-line FlexrlErrors."""

    def __init__(self) -> None:
        from kubernetes import client, config

        try:
            config.load_kube_config()
        except Exception:
            try:
                config.load_incluster_config()
            except Exception as e:
                raise FlexrlError(
                    f"no Kubernetes configuration (kubeconfig or in-cluster): {e}"
                ) from None
        self.api = client.ApiClient()
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.version_api = client.VersionApi(self.api)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            raise FlexrlError(f"Kubernetes: {what}: {e.status} {e.reason}") from None
        except Exception as e:  # connection refused, TLS, DNS: not our bug, say what failed
            raise FlexrlError(f"Kubernetes: {what}: {type(e).__name__}: {e}") from None

    def server_version(self) -> ServerVersion:
        info = self._call("reading the server version", self.version_api.get_code)
        return ServerVersion.parse(info.major, info.minor)

    def create_job(self, manifest: dict[str, Any]) -> None:
        body = self.api.deserialize(json.dumps(manifest), "V1Job", None)
        ns = manifest["metadata"]["namespace"]
        self._call(
            f"creating Job {manifest['metadata']['name']}",
            self.batch.create_namespaced_job,
            ns,
            body,
        )

    def create_service(self, manifest: dict[str, Any]) -> None:
        body = self.api.deserialize(json.dumps(manifest), "V1Service", None)
        ns = manifest["metadata"]["namespace"]
        self._call(
            f"creating Service {manifest['metadata']['name']}",
            self.core.create_namespaced_service,
            ns,
            body,
        )

    def jobs(self, namespace: str, sweep_id: str) -> list[Any]:
        result = self._call(
            "listing Jobs",
            self.batch.list_namespaced_job,
            namespace,
            label_selector=f"{SWEEP_LABEL}={sweep_id}",
        )
        return sorted(result.items, key=lambda j: j.metadata.creation_timestamp or 0)

    def pods(self, namespace: str, sweep_id: str) -> list[Any]:
        result = self._call(
            "listing pods",
            self.core.list_namespaced_pod,
            namespace,
            label_selector=f"{SWEEP_LABEL}={sweep_id}",
        )
        return sorted(result.items, key=lambda p: p.metadata.creation_timestamp or 0)

    def pod_log(self, namespace: str, pod: str) -> str:
        return self._call(
            f"reading the log of {pod}",
            self.core.read_namespaced_pod_log,
            pod,
            namespace,
            container=CONTAINER,
        )

    def delete_job(self, namespace: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            # Background: pods get SIGTERM, so a training trial checkpoints before it goes.
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise FlexrlError(
                    f"Kubernetes: deleting Job {name}: {e.status} {e.reason}"
                ) from None
