"""The sections of a cluster deployment: ``storage`` (object storage), ``kfp`` (the Kubeflow Pipelines
API), ``images`` and ``resources`` (resource profiles, retries and credentials per environment)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from refinery.config._base import _Strict


class StorageConfig(_Strict):
    """Object storage (S3 API) for s3:// data, registry artifacts and Bentos, as the AWS tools read it.

    Both values become environment variables of every step (and of refinery's own commands) unless the
    environment already sets them; the access keys come from the environment only (a Secret on a cluster).
    """

    endpoint_url: str | None = Field(
        None, description="S3 endpoint of a store other than AWS (MinIO, SeaweedFS, Ceph): AWS_ENDPOINT_URL."
    )
    region: str | None = Field(None, description="The store's region: AWS_DEFAULT_REGION.")

    def env(self) -> dict[str, str]:
        """The environment variables these settings become."""
        values = {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_DEFAULT_REGION": self.region}
        return {name: value for name, value in values.items() if value}


class KfpConfig(_Strict):
    """Where ``refinery submit`` and ``refinery schedules`` find the Kubeflow Pipelines API, and how they
    authenticate there (refinery.orchestration.kfp_api).

    The environment wins over these settings: ``REFINERY_KFP_HOST`` (or kfp's own
    ``KF_PIPELINES_ENDPOINT``) over ``host``, ``KF_PIPELINES_UI_ENDPOINT`` over ``ui_url``. No credential is
    written here: a bearer token comes from ``REFINERY_KFP_TOKEN``, or else the pod's Kubeflow Pipelines
    service-account token (the file ``KF_PIPELINES_SA_TOKEN_PATH`` names, by default
    /var/run/secrets/kubeflow/pipelines/token) when it exists.
    """

    host: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="The KFP API endpoint, e.g. http://ml-pipeline.kubeflow.svc.cluster.local:8888 (null:"
        " not configured).",
    )
    namespace: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="The Kubeflow profile namespace of a multi-user deployment (null: single-user).",
    )
    experiment: str = Field(
        "refinery", min_length=1, description="The experiment runs go to (created when missing)."
    )
    ui_url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="Base URL of the Kubeflow Pipelines UI for run links (default: the host).",
    )
    verify_ssl: bool = Field(True, description="Verify the API server's TLS certificate.")
    ca_cert: str | None = Field(
        None, description="A CA bundle file to verify the API server's certificate with."
    )
    service_account: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="The Kubernetes service account runs and recurring runs execute as (k8s/platform's"
        " refinery-pipeline; null: Kubeflow's default, pipeline-runner or default-editor).",
    )


class ImagesConfig(_Strict):
    """Where the project images live: ``<registry>/refinery:<tag>`` (every step, and the serving image)
    and ``<registry>/refinery-gpu:<tag>`` (fine-tuning). ``localhost`` is podman's local storage, not a
    registry: a cluster configuration names a registry the cluster pulls from."""

    registry: str = Field(
        "localhost",
        pattern=r"^[a-z0-9]([a-z0-9._:-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$",
        description="Registry host and path prefix, e.g. registry.acme.example/ml (refinery compile"
        " --registry overrides it).",
    )


class Toleration(_Strict):
    """A Kubernetes toleration, e.g. of the taint GPU node pools carry."""

    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class SecretEnv(_Strict):
    """An environment variable read from a Kubernetes secret (e.g. a model hub token)."""

    secret: str
    key: str
    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class ResourceProfile(_Strict):
    """Where and with what a pipeline step's pod runs on the cluster (ignored by local runs)."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    accelerator_type: str | None = Field(None, description="e.g. nvidia.com/gpu")
    accelerator_count: int = Field(0, ge=0)
    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    shm_size: str | None = Field(None, description="Size of a memory-backed /dev/shm, e.g. 8Gi.")
    checkpoint_pvc: str | None = Field(None, description="PVC mounted at training.checkpoint.dir.")
    model_cache_pvc: str | None = Field(None, description="PVC mounted at model.cache_dir.")
    secrets: tuple[SecretEnv, ...] = ()


def pvc_problems(
    profile: ResourceProfile,
    where: str,
    *,
    checkpoint_dir: str | None,
    model_cache_dir: str | None,
) -> Iterator[str]:
    """What is wrong with where ``profile``'s PVCs would be mounted: each at its directory setting, which
    must be an absolute path in the container, and not both at the same one.

    Args:
        profile: The resource profile.
        where: Its dotted path, for messages (``resources.prod.finetune``).
        checkpoint_dir: ``training.checkpoint.dir``, where ``checkpoint_pvc`` is mounted.
        model_cache_dir: ``model.cache_dir``, where ``model_cache_pvc`` is mounted.
    """
    for pvc, field, mount, mount_field in (
        (profile.checkpoint_pvc, "checkpoint_pvc", checkpoint_dir, "training.checkpoint.dir"),
        (profile.model_cache_pvc, "model_cache_pvc", model_cache_dir, "model.cache_dir"),
    ):
        if pvc and not (mount and mount.startswith("/")):
            yield (
                f"{where}.{field} {pvc!r} is mounted at {mount_field}, which must be an absolute path"
                f" in the container (got {mount!r})"
            )
    if profile.checkpoint_pvc and profile.model_cache_pvc and checkpoint_dir == model_cache_dir:
        yield (
            f"{where}: checkpoint_pvc and model_cache_pvc would both be mounted at {checkpoint_dir}"
            " (training.checkpoint.dir equals model.cache_dir)"
        )


class Credentials(_Strict):
    """Kubernetes Secrets holding the credentials of each network service, by service. Each step reads
    only the services it calls (pipelines/resources.py says which); a Secret's keys are the environment
    variable names the step reads (refinery.credentials lists them), so no value ever passes through the
    pipeline, a parameter or a log."""

    registry: str | None = Field(
        None, description="MLflow: MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN; PGPASSWORD."
    )
    object_store: str | None = Field(
        None, description="S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN)."
    )
    git: str | None = Field(
        None,
        description="GitOps remote: REFINERY_GIT_TOKEN (https) or REFINERY_GIT_SSH_KEY and"
        " REFINERY_GIT_KNOWN_HOSTS (ssh).",
    )
    container_registry: str | None = Field(
        None, description="The image registry: REFINERY_REGISTRY_USERNAME, REFINERY_REGISTRY_PASSWORD."
    )
    inference_log: str | None = Field(
        None,
        description="The inference log's database, where the data steps read the service's feedback"
        " (data.feedback): PGPASSWORD.",
    )
    pipelines: str | None = Field(
        None,
        description="The Kubeflow Pipelines API the monitoring pipeline starts retraining runs through:"
        " REFINERY_KFP_TOKEN, a bearer token (a multi-user deployment; single-user needs none).",
    )
    image_pull_secret: str | None = Field(
        None, description="A docker-registry Secret the pods pull the images with (imagePullSecrets)."
    )


class RetryPolicy(_Strict):
    """How a failed step is retried: ``count`` more attempts, waiting ``backoff_seconds`` times
    ``factor`` to the power of the attempt, for at most ``max_seconds`` from the first attempt."""

    count: int = Field(3, ge=0)
    backoff_seconds: int = Field(30, ge=1)
    factor: float = Field(2.0, ge=1)
    max_seconds: int = Field(3600, ge=1)


class EnvironmentResources(_Strict):
    """The resource profiles of one environment: fine-tuning on GPU nodes, every other step."""

    finetune: ResourceProfile = ResourceProfile()
    steps: ResourceProfile = ResourceProfile()
    finetune_retries: int = Field(
        3,
        ge=0,
        description="Retries of a failed or preempted finetune task (it resumes from its checkpoint).",
    )
    network_retries: RetryPolicy = Field(
        RetryPolicy(),
        description="Retries of every other step that calls a network service (an outage of the"
        " registry, object store, git remote or image registry).",
    )
    credentials: Credentials = Credentials()
