"""Which environment variables carry each network service's credentials.

Credentials never pass through a configuration file, a pipeline parameter, an artifact or a log: every
step reads them from its environment, where a Kubernetes Secret puts them on a cluster
(``resources.<environment>.credentials`` names the Secret of each service, and the compiled pipeline
maps the Secret's keys below to the variables of the same name) and the user's shell puts them for
``refinery run``. The variable names are the ones each client library reads by itself (the AWS SDK,
MLflow, libpq), except git's and the image registry's, which refinery hands to git and to its registry
client itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceCredentials:
    """The variables one service's Secret provides.

    Attributes:
        required: Keys the Secret must hold (a pod does not start without them).
        optional: Keys read when present.
    """

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Every variable, required first."""
        return self.required + self.optional


GIT_TOKEN = "REFINERY_GIT_TOKEN"
GIT_USERNAME = "REFINERY_GIT_USERNAME"
GIT_SSH_KEY = "REFINERY_GIT_SSH_KEY"
GIT_KNOWN_HOSTS = "REFINERY_GIT_KNOWN_HOSTS"
REGISTRY_USERNAME = "REFINERY_REGISTRY_USERNAME"
REGISTRY_PASSWORD = "REFINERY_REGISTRY_PASSWORD"

#: By service (the fields of :class:`refinery.config.Credentials`).
SERVICES: dict[str, ServiceCredentials] = {
    # MLflow reads these for a tracking server behind basic or bearer authentication; libpq reads
    # PGPASSWORD for a registry kept directly in PostgreSQL.
    "registry": ServiceCredentials(
        optional=(
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_TRACKING_TOKEN",
            "PGPASSWORD",
        )
    ),
    "object_store": ServiceCredentials(
        required=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), optional=("AWS_SESSION_TOKEN",)
    ),
    # https with a token, or ssh with a private key and the host keys to trust.
    "git": ServiceCredentials(optional=(GIT_TOKEN, GIT_USERNAME, GIT_SSH_KEY, GIT_KNOWN_HOSTS)),
    "container_registry": ServiceCredentials(required=(REGISTRY_USERNAME, REGISTRY_PASSWORD)),
    # The service's feedback, read by the data steps beside the inference log (libpq's PGPASSWORD).
    "inference_log": ServiceCredentials(optional=("PGPASSWORD",)),
    # The Kubeflow Pipelines API, for the monitor's retraining runs: a bearer token where the API
    # authenticates (multi-user Kubeflow); refinery.orchestration.kfp_api reads it.
    "pipelines": ServiceCredentials(optional=("REFINERY_KFP_TOKEN",)),
}

#: Every credential variable: what ``refinery run --runner docker`` hands on to the step containers
#: from its own environment, standing in for the Secrets of a cluster.
ENV_NAMES: tuple[str, ...] = tuple(name for service in SERVICES.values() for name in service.names)
