"""A small in-process HTTP server that stands in for the Kubernetes API server.

No Kubernetes API server can run in the test environment, so this serves the only requests
``refinery status`` makes, read-only: ``GET /apis/apps/v1/namespaces/{ns}/deployments/{name}`` and
``GET /api/v1/namespaces/{ns}/configmaps/{name}``. The objects are built with the ``kubernetes``
client's own models and serialized the way the client serializes them, so what the code under test
parses is a real object's JSON; anything else is answered with the API server's ``Status`` 404 (or 405
for a method other than GET). Every request is recorded (method, path, Authorization header), and a
request without the expected bearer token is refused with 401, as the API server would.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml


def deployment(
    namespace: str,
    configmap: str,
    *,
    replicas: int,
    updated: int,
    available: int,
    generation: int = 2,
    observed: int = 2,
    name: str = "refinery-serving",
) -> Any:
    """The serving Deployment as the API server reports it: its pod template takes the release ConfigMap
    through envFrom (as k8s/base/deployment.yaml does), with the rollout counters given."""
    from kubernetes import client

    container = client.V1Container(
        name="serving",
        image="registry.test/refinery@sha256:" + "a" * 64,
        env_from=[
            client.V1EnvFromSource(config_map_ref=client.V1ConfigMapEnvSource(name=configmap)),
            client.V1EnvFromSource(secret_ref=client.V1SecretEnvSource(name="refinery-s3", optional=True)),
        ],
        env=[client.V1EnvVar(name="HOME", value="/tmp")],
    )
    labels = {"app.kubernetes.io/component": "serving"}
    return client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, generation=generation),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels), spec=client.V1PodSpec(containers=[container])
            ),
        ),
        status=client.V1DeploymentStatus(
            replicas=max(replicas, updated),
            updated_replicas=updated,
            available_replicas=available,
            ready_replicas=available,
            observed_generation=observed,
        ),
    )


def release_configmap(namespace: str, name: str, model: str, version: str) -> Any:
    """The ConfigMap kustomize generates from an overlay's refinery-release literals."""
    from kubernetes import client

    return client.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        data={
            "REFINERY_MODEL_NAME": model,
            "REFINERY_MODEL_VERSION": version,
            "REFINERY_ENVIRONMENT": namespace.removeprefix("refinery-"),
        },
    )


class StandInKubernetesApi:
    """Stands in for the Kubernetes API server: serves the objects put in it to GET requests.

    Use as a context manager; :meth:`put` adds or replaces an object, :meth:`kubeconfig` writes a
    kubeconfig whose current context points here with the bearer token it expects.
    """

    TOKEN = "stand-in-token"

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}
        self.requests: list[tuple[str, str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def put(self, obj: Any) -> None:
        """Serve ``obj`` (a Deployment or ConfigMap model) at its API path."""
        meta = obj.metadata
        if obj.kind == "Deployment":
            path = f"/apis/apps/v1/namespaces/{meta.namespace}/deployments/{meta.name}"
        else:
            path = f"/api/v1/namespaces/{meta.namespace}/configmaps/{meta.name}"
        from kubernetes.client import ApiClient

        self.objects[path] = ApiClient().sanitize_for_serialization(obj)

    def kubeconfig(self, path: Path, *, unreachable_port: int | None = None) -> Path:
        """Write a kubeconfig for this server (context ``stand-in``, the current one); with
        ``unreachable_port``, also a context ``elsewhere`` whose server listens nowhere."""
        clusters = [{"name": "stand-in", "cluster": {"server": self.url}}]
        contexts = [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "reader"}}]
        if unreachable_port is not None:
            clusters.append(
                {"name": "elsewhere", "cluster": {"server": f"http://127.0.0.1:{unreachable_port}"}}
            )
            contexts.append({"name": "elsewhere", "context": {"cluster": "elsewhere", "user": "reader"}})
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": clusters,
            "users": [{"name": "reader", "user": {"token": self.TOKEN}}],
            "contexts": contexts,
            "current-context": "stand-in",
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def __enter__(self) -> StandInKubernetesApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._answer(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": message,
                        "reason": reason,
                        "code": code,
                    },
                )

            def do_GET(self) -> None:
                path = self.path.partition("?")[0]
                api.requests.append(("GET", path, self.headers.get("Authorization", "")))
                if self.headers.get("Authorization") != f"Bearer {api.TOKEN}":
                    self._status(401, "Unauthorized", "Unauthorized")
                elif path in api.objects:
                    self._answer(200, api.objects[path])
                else:
                    self._status(404, "NotFound", f"{path} not found")

            def _refuse(self) -> None:
                api.requests.append((self.command, self.path, self.headers.get("Authorization", "")))
                self._status(405, "MethodNotAllowed", "the stand-in serves GET only")

            do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
