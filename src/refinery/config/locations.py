"""Locations: the settings that name a file, folder, URL or repository (:data:`LOCATIONS`, the one list
of them), and how a configuration's locations are made concrete (:func:`resolve`).

Every place that treats locations by kind reads :data:`LOCATIONS`: :func:`resolve` (absolute paths,
embedded defaults, the cluster contract) and the container runner's bind mounts
(:func:`refinery.orchestration.containers.bind_mounts`). A new setting that names a place is one entry
there.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from refinery.config.run import RunConfig
from refinery.errors import ConfigError

#: What a location is, which decides how it is resolved, checked and mounted:
#:
#: * ``data``: an input a step reads (data files, the base model): made absolute; a cluster configuration
#:   must name object storage (or a model hub); mounted read-only into step containers.
#: * ``image``: a folder of the project (the service, the GitOps seed manifests): made absolute; on a
#:   cluster it resolves inside the step's image; mounted read-only.
#: * ``scratch``: a step's own working folder (caches, checkpoints, reports): ``default`` under
#:   ``state_dir``, or under the temporary folder in a cluster configuration; not mounted (a step's disk
#:   is scratch space).
#: * ``database``: a SQLAlchemy URL; a sqlite file ``default`` under ``state_dir``, whose folder is
#:   mounted writable; a cluster configuration must name a server.
#: * ``store``: a folder or object-store URI; ``default`` under ``state_dir``, mounted writable; a
#:   cluster configuration must name object storage.
#: * ``git``: a git repository; a local bare repository ``default`` under ``state_dir`` (built beside its
#:   path and renamed into place, so the folder it goes into is mounted); a cluster configuration must
#:   name a remote.
LocationKind = Literal["data", "image", "scratch", "database", "store", "git"]


@dataclass(frozen=True)
class Location:
    """One setting that names a place.

    Attributes:
        key: The setting's dotted path, e.g. ``packaging.bento_store``.
        kind: How it is resolved, checked and mounted (:data:`LocationKind`).
        default: The file or folder name under ``state_dir`` (scratch: under the scratch folder) that an
            empty value becomes; None: the value is required or stays empty.
        on_cluster: For a service, what a cluster configuration must name here (the message's tail).
        cluster_optional: A service a cluster configuration may leave empty.
    """

    key: str
    kind: LocationKind
    default: str | None = None
    on_cluster: str = ""
    cluster_optional: bool = False

    def get(self, tree: Mapping[str, Any]) -> Any:
        """The value of this setting in a configuration tree (:meth:`RunConfig.to_dict`)."""
        node: Any = tree
        for part in self.key.split("."):
            node = node[part]
        return node

    def set(self, tree: dict[str, Any], value: Any) -> None:
        """Set this setting in a configuration tree."""
        *sections, name = self.key.split(".")
        node = tree
        for part in sections:
            node = node[part]
        node[name] = value


_DATABASE_SERVER = "must be a database server (postgresql+psycopg://...)"

#: Every setting that names a place, by kind (see :data:`LocationKind`).
LOCATIONS: tuple[Location, ...] = (
    Location("data.uri", "data"),
    Location("data.validation_uri", "data"),
    Location("data.test_uri", "data"),
    Location("data.retention_uri", "data"),
    Location("data.incoming_uri", "data"),
    Location("data.prepare.augment.synonyms", "data"),
    Location("model.base", "data"),
    Location("packaging.service_dir", "image"),
    Location("gitops.seed_dir", "image"),
    Location("model.cache_dir", "scratch", "model-cache"),
    Location("training.checkpoint.dir", "scratch", "checkpoints"),
    Location("packaging.bentoml_home", "scratch", "bentoml"),
    Location("monitoring.report_dir", "scratch", "monitoring"),
    Location(
        "registry.tracking_uri",
        "database",
        "mlflow.db",
        "must name an MLflow server (http://...) or a database server",
    ),
    Location(
        "registry.artifact_location",
        "store",
        "mlartifacts",
        "must be object storage (s3://...), not a local folder",
        cluster_optional=True,
    ),
    Location("packaging.bento_store", "store", "bentos", "must be object storage (s3://bucket/bentos)"),
    Location(
        "gitops.repository",
        "git",
        "gitops.git",
        "must be the remote Argo CD watches (https://, ssh:// or git@host:path)",
    ),
    Location("serving.inference_log", "database", "inference.db", _DATABASE_SERVER),
    Location("monitoring.trigger_log", "database", "triggers.db", _DATABASE_SERVER),
)


def locations(*kinds: LocationKind) -> tuple[Location, ...]:
    """The entries of :data:`LOCATIONS` of the given kinds (all of them without any)."""
    return tuple(loc for loc in LOCATIONS if not kinds or loc.kind in kinds)


# scheme://... (file, s3, gs, https, ssh, postgresql)
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# git's scp-like remote syntax, as git reads it: [user@]host:path, with no slash before the colon.
_SCP_LIKE = re.compile(r"^(?:[\w.-]+@)?[\w.-]+:(?!//)")
# A credential written into a URL: scheme://user:password@host, or any user part of an http(s) URL (where
# git and most APIs take a bare token: https://TOKEN@host). ssh://git@host and postgresql://user@host name
# a user only.
_CREDENTIAL_IN_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s:]*:[^/@\s]+@|https?://[^/@\s]+@)", re.I)


def is_uri(value: str) -> bool:
    """Whether ``value`` is a URI (``scheme://...``), not a path."""
    return bool(_URI.match(value))


def is_git_remote(location: str) -> bool:
    """Whether git takes ``location`` for a remote (a URL, or scp-like ``[user@]host:path``), not a path."""
    return "://" in location or bool(_SCP_LIKE.match(location))


def is_local(value: str) -> bool:
    """Whether ``value`` names something on this machine: a path, or a ``file://`` URI."""
    return not is_uri(value) or value.startswith("file://")


def _absolute(value: str, base: Path) -> str:
    if is_uri(value):
        return value
    # abspath, not resolve(): a symbolic link (models/all-MiniLM-L6-v2) keeps the name it was given.
    return os.path.abspath(base / Path(value).expanduser())


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _database(url: str | None) -> str:
    return (url or "").partition("://")[0].split("+")[0].lower()


def _leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, tree


def _cluster_problem(loc: Location, value: str | None) -> str | None:
    """What keeps ``value`` of ``loc`` from serving pods that share nothing but network services."""
    if loc.kind == "data":
        if value and is_local(value):
            return f"{loc.key} {value!r} is a local path; a pod reads it from object storage (s3://, gs://, hf://)"
        return None
    if loc.kind == "database":
        bad = not value or _database(value) in {"sqlite", "file", ""} or is_local(value)
    elif loc.kind == "store":
        bad = (not value and not loc.cluster_optional) or bool(value and is_local(value))
    elif loc.kind == "git":
        bad = not value or not is_git_remote(value) or value.startswith("file://")
    else:  # image folders resolve inside the step's image; scratch folders are the pod's own disk
        bad = False
    return f"{loc.key} {loc.on_cluster}" if bad else None


def _cluster_problems(d: dict[str, Any]) -> list[str]:
    """What keeps a configuration without state_dir from running as separate pods (empty: nothing)."""
    # A configuration travels as a pipeline parameter, shown in the Kubeflow UI: it holds no secret.
    problems = [
        f"{key} holds a password or token; credentials come from the Secrets named in "
        "resources.<environment>.credentials"
        for key, value in _leaves(d)
        if isinstance(value, str) and _CREDENTIAL_IN_URL.match(value)
    ]
    for loc in LOCATIONS:
        problem = _cluster_problem(loc, loc.get(d))
        if problem:
            problems.append(problem)
    return problems


def _resolved(loc: Location, value: str | None, base: Path, state: Path | None, scratch: Path) -> str | None:
    """``value`` of ``loc`` made concrete (see :func:`resolve`)."""
    if loc.kind in ("data", "image"):
        return _absolute(value, base) if value else value
    if loc.kind == "scratch":
        return _absolute(value or str(scratch / str(loc.default)), base)
    if state is None:  # a cluster configuration names its services as they are
        return value
    if loc.kind == "database":
        return value or _sqlite_url(state / str(loc.default))
    location = value or str(state / str(loc.default))
    if loc.kind == "git" and is_git_remote(location):
        return location
    return _absolute(location, base)


def resolve(config: RunConfig, base: Path | None = None) -> RunConfig:
    """Make every location concrete: relative paths absolute; in an embedded configuration, empty
    locations under ``state_dir``; in a cluster configuration, scratch folders on the step's own disk.

    Raises:
        ConfigError: A cluster configuration (``state_dir: null``) leaves a service location empty or
            names a local path where a pod needs a network service; the message lists every such field.
    """
    base = base or Path.cwd()
    d = config.to_dict()
    problems = [] if config.embedded else _cluster_problems(d)
    if problems:
        raise ConfigError(
            "a cluster configuration (state_dir: null) shares nothing between steps but pipeline artifacts"
            " and network services:\n" + "\n".join(f"  {p}" for p in problems)
        )
    state = Path(_absolute(config.state_dir, base)) if config.state_dir is not None else None
    # A cluster configuration's scratch folders are on each step's own disk, never shared.
    scratch = state if state is not None else Path(tempfile.gettempdir()) / "refinery"
    if state is not None:
        d["state_dir"] = str(state)
    for loc in LOCATIONS:
        loc.set(d, _resolved(loc, loc.get(d), base, state, scratch))
    return RunConfig.model_validate(d)
