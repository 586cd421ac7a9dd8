"""One exception hierarchy for the project.

Every error a user can cause carries a message that names the file, field, expectation or step at
fault. The CLI turns these into a one-line message and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations


class RefineryError(Exception):
    """Base class of every error refinery raises on purpose."""


class ConfigError(RefineryError):
    """A configuration file or override is invalid; the message names the dotted path at fault."""


class DataError(RefineryError):
    """Input data cannot be read at all (missing, empty, corrupt, wrong encoding or delimiter)."""


class DataValidationError(RefineryError):
    """Data was read but failed the validation suite; the message names the failed expectations."""


class TrainingError(RefineryError):
    """Fine-tuning could not start or finish (bad base model, no usable data)."""


class TrainingPreempted(TrainingError):
    """Training stopped on SIGTERM after saving a checkpoint; running the step again resumes from it.

    The step exits non-zero, so the pipeline's retry policy runs it again.
    """


class GateRejected(RefineryError):
    """The promotion gate rejected a challenger (raised only where a rejection must stop work)."""


class RegistryError(RefineryError):
    """The model registry is unreachable, or a version or alias it should hold is missing or corrupt."""


class PromotionConflict(RefineryError):
    """The champion changed after a challenger was judged against it (another promotion finished or is
    finishing first); nothing was promoted. Evaluate again against the new champion."""


class PackagingError(RefineryError):
    """Building the Bento, or storing it in or fetching it from the Bento store, failed."""


class ImageRegistryError(RefineryError):
    """The container registry is unreachable, refused the credentials, or does not hold an image."""


class GitOpsError(RefineryError):
    """The GitOps repository could not be read, edited, committed or pushed."""


class ClusterError(RefineryError):
    """A kubeconfig cannot be used, or the Kubernetes API it names is unreachable or refused a read."""


class MonitoringError(RefineryError):
    """The inference log, reference profile or drift report could not be used."""


class PipelineError(RefineryError):
    """A pipeline run failed; the message names the step and its error."""


class KfpApiError(RefineryError):
    """The Kubeflow Pipelines API is not configured, unreachable, refused the credentials, or refused or
    failed a call; the message names the host and the call (and, for a schedule, the schedule).
    ``status`` is the HTTP status of a call the server answered with an error, else None."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
