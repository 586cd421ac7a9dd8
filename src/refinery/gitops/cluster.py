"""What a cluster runs: the serving Deployment of an environment, read through the Kubernetes API.

The overlay of an environment (k8s/overlays/<environment>) renders the Deployment ``refinery-serving``
in its namespace, with the ConfigMap ``refinery-release-<hash>`` (generated from the release literals,
so every release gets a new name) in its pod template's ``envFrom``. Reading that Deployment, the
release ConfigMap its pod template references and its rollout counters says which model version the
cluster runs, or is rolling out, independently of what the GitOps branch names (Argo CD may not have
synced it yet: prod syncs by hand).

Only GET requests are made, with the credentials and context of the kubeconfig given; nothing is
written, not even refreshed tokens back to the kubeconfig.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.errors import ClusterError
from refinery.results import Record
from refinery.serving import ENV_MODEL_NAME, ENV_MODEL_VERSION

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

#: The serving Deployment's name in k8s/base (an overlay's namePrefix/nameSuffix wrap it).
DEPLOYMENT = "refinery-serving"
#: The release ConfigMap's generator name; kustomize appends ``-<hash>``.
RELEASE_CONFIGMAP = "refinery-release"
_TIMEOUT_S = 10


@dataclass(frozen=True)
class DeploymentState(Record):
    """The serving Deployment of one namespace, as the Kubernetes API reports it.

    Attributes:
        namespace: Where it was looked for.
        name: The Deployment's name.
        found: Whether it exists.
        configmap: The release ConfigMap its pod template references ("" when none).
        model_name: ``REFINERY_MODEL_NAME`` of that ConfigMap ("" when unknown).
        model_version: ``REFINERY_MODEL_VERSION`` of that ConfigMap ("" when unknown; ``none`` when the
            overlay was never promoted).
        desired: Replicas the spec asks for.
        updated: Replicas running the current pod template.
        available: Replicas available (ready for the minimum time).
        observed: Whether the controller has seen the current spec (``observedGeneration``).
        error: What could not be read ("" when everything was).
    """

    namespace: str
    name: str
    found: bool
    configmap: str = ""
    model_name: str = ""
    model_version: str = ""
    desired: int = 0
    updated: int = 0
    available: int = 0
    observed: bool = False
    error: str = ""

    @property
    def rolled_out(self) -> bool:
        """Whether every desired replica runs the current pod template and is available."""
        return self.found and self.observed and self.updated == self.desired == self.available

    def rollout(self) -> str:
        """The rollout in words: ``3/3 updated, 3/3 available`` (and ``rolling out`` while it is not done)."""
        counts = f"{self.updated}/{self.desired} updated, {self.available}/{self.desired} available"
        return counts if self.rolled_out else f"rolling out: {counts}"


@contextlib.contextmanager
def api_client(kubeconfig: str | Path, context: str | None = None) -> Iterator[ApiClient]:
    """A Kubernetes API client for ``kubeconfig`` (and ``context``, default its current one), closed after.

    Raises:
        ClusterError: The kubeconfig is missing, unreadable or lacks the context.
    """
    from kubernetes import config

    path = Path(kubeconfig).expanduser()
    if not path.is_file():
        raise ClusterError(f"kubeconfig {path} does not exist")
    try:
        api = config.new_client_from_config(config_file=str(path), context=context, persist_config=False)
    except (config.ConfigException, ValueError, OSError) as exc:
        where = f"context {context!r} of " if context else ""
        raise ClusterError(f"cannot use {where}kubeconfig {path}: {exc}") from None
    try:
        yield api
    finally:
        api.close()


def read_deployment(
    api: ApiClient, namespace: str, *, name_prefix: str = "", name_suffix: str = ""
) -> DeploymentState:
    """The serving Deployment of ``namespace`` and the release its pod template references.

    A Deployment that is missing, or a read the API refuses (no permission), is reported in the result's
    ``error``; only an API server that cannot be reached raises.

    Args:
        api: A client from :func:`api_client`.
        namespace: The overlay's namespace.
        name_prefix: The overlay's ``namePrefix`` (applied to the Deployment and the ConfigMap).
        name_suffix: The overlay's ``nameSuffix`` (applied to the Deployment).

    Raises:
        ClusterError: The API server cannot be reached.
    """
    from kubernetes import client

    name = f"{name_prefix}{DEPLOYMENT}{name_suffix}"
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    deployment = _get(
        lambda: apps.read_namespaced_deployment(name, namespace, _request_timeout=_TIMEOUT_S),
        f"Deployment {namespace}/{name}",
        api,
    )
    if isinstance(deployment, str):
        return DeploymentState(namespace, name, found=False, error=deployment)
    spec, status = deployment.spec, deployment.status
    desired = 1 if spec.replicas is None else int(spec.replicas)
    generation = deployment.metadata.generation or 0
    state = DeploymentState(
        namespace,
        name,
        found=True,
        desired=desired,
        updated=int(status.updated_replicas or 0) if status else 0,
        available=int(status.available_replicas or 0) if status else 0,
        observed=bool(status and (status.observed_generation or 0) >= generation),
    )
    configmap = _release_configmap(spec.template.spec, f"{name_prefix}{RELEASE_CONFIGMAP}")
    if configmap is None:
        return _replace(state, error=f"its pod template references no {RELEASE_CONFIGMAP}-* ConfigMap")
    found = _get(
        lambda: core.read_namespaced_config_map(configmap, namespace, _request_timeout=_TIMEOUT_S),
        f"ConfigMap {namespace}/{configmap}",
        api,
    )
    if isinstance(found, str):
        return _replace(state, configmap=configmap, error=found)
    data = found.data or {}
    return _replace(
        state,
        configmap=configmap,
        model_name=str(data.get(ENV_MODEL_NAME, "")),
        model_version=str(data.get(ENV_MODEL_VERSION, "")),
        error="" if ENV_MODEL_VERSION in data else f"ConfigMap {configmap} has no {ENV_MODEL_VERSION}",
    )


def _replace(state: DeploymentState, **changes: Any) -> DeploymentState:
    import dataclasses

    return dataclasses.replace(state, **changes)


def _get(read: Any, what: str, api: ApiClient) -> Any:
    """``read()``'s object, or a message (str) when the API answered with an error."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    host = api.configuration.host
    try:
        return read()
    except ApiException as exc:
        if exc.status == 404:
            return f"no {what}"
        reason = (exc.reason or "").strip()
        return f"reading {what} at {host} failed: HTTP {exc.status} {reason}".rstrip()
    except (HTTPError, OSError) as exc:
        raise ClusterError(
            f"Kubernetes API at {host} is unreachable while reading {what}: {exc}", unreachable=True
        ) from None


def _release_configmap(pod_spec: Any, prefix: str) -> str | None:
    """The name of the first ``<prefix>-*`` ConfigMap the pod spec's containers take variables from."""
    for container in [*(pod_spec.init_containers or []), *(pod_spec.containers or [])]:
        names = [
            source.config_map_ref.name
            for source in container.env_from or []
            if source.config_map_ref is not None
        ]
        names += [
            var.value_from.config_map_key_ref.name
            for var in container.env or []
            if var.value_from is not None and var.value_from.config_map_key_ref is not None
        ]
        for name in names:
            if name == prefix or name.startswith(f"{prefix}-"):
                return str(name)
    return None
