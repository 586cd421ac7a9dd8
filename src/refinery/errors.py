"""One exception hierarchy for the project, and the exit status each error means.

Every error a user can cause carries a message that names the file, field, expectation or step at
fault. The CLI turns these into a one-line message and the error's :attr:`RefineryError.exit_code`
instead of a traceback (``refinery.cli.main`` maps them in one place):

* :data:`EXIT_OK` (0): success;
* :data:`EXIT_FAILED` (1): the work ran and said no (the gate rejected, the data failed validation,
  drift fired where ``--exit-code`` asked to be told, the champion moved first);
* :data:`EXIT_USAGE` (2): a usage or configuration error (bad flags or configuration, a missing input,
  data that cannot be read, a version the registry does not hold);
* :data:`EXIT_UNAVAILABLE` (3): a service could not be reached (registry, object store, git remote,
  Kubeflow Pipelines API, database, container registry, Kubernetes API, the prediction service).

An error is "unreachable" when the place that raises it says so, ``RegistryError(msg, unreachable=True)``
(every class of the hierarchy takes the flag, so code handed an error class, such as
:func:`refinery.db.ping`, raises it too), or when it was raised ``from`` a failure to connect
(:func:`is_connection_failure`: refused, timed out, unknown host, a database server that never
answered). A caller that retries an outage tests :attr:`RefineryError.unreachable`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class RefineryError(Exception):
    """Base class of every error refinery raises on purpose.

    Args:
        *args: The message, as for any exception.
        unreachable: The error is a service that could not be reached (exit status 3), not a mistake
            of the caller's. An error raised ``from`` a connection failure (:func:`is_connection_failure`)
            is unreachable without being told.
    """

    #: The exit status of a command that stops on an error of this class when it is not unreachable.
    default_exit_code: int = EXIT_USAGE

    def __init__(self, *args: object, unreachable: bool = False) -> None:
        super().__init__(*args)
        self._unreachable = unreachable

    @property
    def unreachable(self) -> bool:
        """Whether a service could not be reached: the raiser said so, or the cause was a failure to
        connect."""
        return getattr(self, "_unreachable", False) or is_connection_failure(self.__cause__)

    @property
    def exit_code(self) -> int:
        """The exit status of a command that stops on this error."""
        return EXIT_UNAVAILABLE if self.unreachable else self.default_exit_code


class ConfigError(RefineryError):
    """A configuration file or override is invalid; the message names the dotted path at fault."""


class DataError(RefineryError):
    """Input data cannot be read at all (missing, empty, corrupt, wrong encoding or delimiter)."""


class DataValidationError(RefineryError):
    """Data was read but failed the validation suite; the message names the failed expectations."""

    default_exit_code = EXIT_FAILED


class TrainingError(RefineryError):
    """Fine-tuning could not start or finish (bad base model, no usable data)."""


class TrainingPreempted(TrainingError):
    """Training stopped on SIGTERM after saving a checkpoint; running the step again resumes from it.

    The step exits non-zero, so the pipeline's retry policy runs it again.
    """


class GateRejected(RefineryError):
    """The promotion gate rejected a challenger (raised only where a rejection must stop work)."""

    default_exit_code = EXIT_FAILED


class RegistryError(RefineryError):
    """The model registry is unreachable (``unreachable=True``), or a version or alias it should hold is
    missing or corrupt."""


class PromotionConflict(RefineryError):
    """The champion changed after a challenger was judged against it (another promotion finished or is
    finishing first); nothing was promoted. Evaluate again against the new champion."""

    default_exit_code = EXIT_FAILED


class PackagingError(RefineryError):
    """Building the Bento, or storing it in or fetching it from the Bento store, failed."""


class ImageRegistryError(RefineryError):
    """The container registry is unreachable (``unreachable=True``), refused the credentials, or does not
    hold an image."""


class GitOpsError(RefineryError):
    """The GitOps repository could not be read, edited, committed or pushed (``unreachable=True``: its
    remote could not be reached)."""


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

    def __init__(self, message: str, status: int | None = None, *, unreachable: bool = False) -> None:
        super().__init__(message, unreachable=unreachable)
        self.status = status


# Exceptions of the clients refinery uses (botocore, aiohttp, urllib3, requests) that mean the server
# was not reached; matched by name so that this module imports none of them.
_CONNECTION_FAILURES = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "NewConnectionError",
        "MaxRetryError",
        "ConnectTimeout",
    }
)


def is_connection_failure(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from, is a failure to reach a server (refused,
    timed out, unknown host), as opposed to a server's answer or a local mistake.

    For the places that turn a client library's exception into a domain error:
    ``PackagingError(msg, unreachable=is_connection_failure(exc))``.
    """
    import urllib.error

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionError | TimeoutError | urllib.error.URLError):
            return not isinstance(exc, urllib.error.HTTPError)
        if any(cls.__name__ in _CONNECTION_FAILURES for cls in type(exc).__mro__):
            return True
        if _database_connection_failed(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _database_connection_failed(exc: BaseException) -> bool:
    """A PostgreSQL driver's error with no SQLSTATE (the server never answered) or of class 08
    (connection exception); SQLAlchemy's wrapper of it when it says the connection was invalidated."""
    if getattr(exc, "connection_invalidated", False):
        return True
    module = type(exc).__module__.split(".")[0]
    if module not in {"psycopg", "psycopg2"} or type(exc).__name__ != "OperationalError":
        return False
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return sqlstate is None or str(sqlstate).startswith("08")
