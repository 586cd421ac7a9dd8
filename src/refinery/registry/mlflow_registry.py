"""The model registry: versions, aliases and lineage on MLflow.

One registered model (``registry.model_name``) holds every trained version. Each version is created
from an MLflow run whose artifacts are ``model/`` (the saved model directory), ``reference/``
(``reference.parquet``, the per-text descriptors drift monitoring compares served requests against, and
``profile.json``, the profile of the training data, both kept with the model) and ``evaluation/`` (the
evaluation outputs). Aliases carry the loop's state: ``challenger`` names the newest registered
version, ``champion-<environment>`` (e.g. ``champion-dev``, ``champion-prod``) the version each GitOps
environment serves. The same code talks to a sqlite file (the embedded default) and to PostgreSQL or an
MLflow server; nothing here touches MLflow's process-wide tracking URI.

Registries written before champions were per environment hold one plain ``champion`` alias, which
promotion moved together with the overlay of the configuration's ``gitops.environment``. It is read as
that (the configured) environment's champion while ``champion-<environment>`` does not exist
(:meth:`Registry.champion` with ``legacy=True``), and retired by the first promotion, rollback or
``refinery models sync`` that writes the configured environment's alias (see
:mod:`refinery.registry.champions`).

The flow that judges, packages and promotes a version (:mod:`refinery.release`) calls the registry;
the registry calls no stage.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.atomic import staged_dir
from refinery.db import create_engine, mask_url, ping
from refinery.errors import RegistryError
from refinery.results import Record

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from refinery.config import RegistryConfig

#: Prefix of the per-environment champion aliases: ``champion-dev`` names what dev serves.
CHAMPION_PREFIX = "champion-"
#: The one champion alias of registries written before champions were per environment.
LEGACY_CHAMPION = "champion"
CHALLENGER = "challenger"
ARTIFACTS = ("model", "reference", "evaluation")
REFERENCE_FILE = "reference.parquet"
PROFILE_FILE = "profile.json"
CARD_FILE = "model_card.md"


def champion_alias(environment: str) -> str:
    """The alias naming the version ``environment`` serves: ``champion-<environment>``."""
    return f"{CHAMPION_PREFIX}{environment}"


# Database back ends get a short connect timeout so an unreachable server fails in seconds, before
# MLflow's own engine creation, which retries for about 100 s.
_CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class ModelVersionInfo(Record):
    """One registered model version.

    Attributes:
        name: Registered model name.
        version: Version number, as a string.
        aliases: Aliases pointing at this version (e.g. ``("challenger", "champion-dev")``).
        tags: Version tags: lineage (data, config, git, pipeline run), metrics, the Bento, and per
            environment what promotion recorded (``<environment>.gitops_commit``, ...).
        run_id: The MLflow run holding the version's artifacts.
        source: The version's artifact source URI.
    """

    name: str
    version: str
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    source: str = ""


def _is_database_uri(uri: str) -> bool:
    scheme = uri.partition("://")[0].lower()
    return scheme.split("+")[0] in {"sqlite", "postgresql", "postgres", "mysql", "mssql"}


def _lost_connection(exc: BaseException) -> bool:
    """Whether an MLflow error was caused by the database connection failing (MLflow wraps those)."""
    seen: BaseException | None = exc
    for _ in range(10):
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if seen is None:
            return False
        if type(seen).__name__ in {"OperationalError", "InterfaceError"}:
            return True
    return False


def _probe_database(uri: str) -> None:
    """Open and close one connection to a database URI; raise RegistryError naming the URI if that fails."""
    from sqlalchemy.pool import NullPool

    engine = create_engine(
        uri, what="registry", error=RegistryError, connect_timeout_s=_CONNECT_TIMEOUT_S, poolclass=NullPool
    )
    try:
        ping(engine, what="registry", error=RegistryError)
    finally:
        engine.dispose()


def _probe_server(uri: str) -> None:
    """Ask an MLflow tracking server's health endpoint; raise RegistryError naming the URI if it is down."""
    import urllib.error
    import urllib.request

    shown = mask_url(uri)
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=_CONNECT_TIMEOUT_S) as response:
            if response.status >= 500:
                raise RegistryError(
                    f"registry unreachable at {shown}: /health answered {response.status}", unreachable=True
                )
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise RegistryError(
                f"registry unreachable at {shown}: /health answered {exc.code}", unreachable=True
            ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(f"registry unreachable at {shown}: {exc}", unreachable=True) from None


class Registry:
    """The MLflow model registry for one registered model.

    The connection is made on first use, so constructing a Registry is cheap and never fails on an
    unreachable back end; the first method call raises RegistryError naming the URI instead.
    """

    def __init__(self, cfg: RegistryConfig) -> None:
        """Bind to the registry described by ``cfg`` (``tracking_uri``, ``artifact_location``, names).

        Raises:
            RegistryError: ``tracking_uri`` is empty (the configuration was not resolved).
        """
        if not cfg.tracking_uri:
            raise RegistryError(
                "registry.tracking_uri is empty; load the configuration with load_config() so it is resolved"
            )
        self._cfg = cfg
        self._uri = cfg.tracking_uri
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None

    @property
    def name(self) -> str:
        """The registered model name."""
        return self._cfg.model_name

    @property
    def uri(self) -> str:
        """The tracking/registry URI with any password masked."""
        return mask_url(self._uri)

    # -- connection -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn MLflow and database errors raised while doing ``action`` into RegistryError."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except RegistryError:
            raise
        except MlflowException as exc:
            if _lost_connection(exc):
                cause = str(exc.message).strip().splitlines()[0]  # the driver's line, not SQLAlchemy's links
                raise RegistryError(
                    f"registry unreachable at {self.uri} while trying to {action}: {cause}", unreachable=True
                ) from exc
            raise RegistryError(f"{action} failed at registry {self.uri}: {exc.message}") from exc
        except Exception as exc:
            module = type(exc).__module__ or ""
            if module.startswith(("sqlalchemy", "sqlite3", "psycopg", "pymysql", "requests", "urllib3")):
                raise RegistryError(
                    f"registry unreachable at {self.uri} while trying to {action}: {exc}", unreachable=True
                ) from exc
            raise

    def _connect(self) -> MlflowClient:
        if self._client is not None:
            return self._client
        # Keep MLflow quiet and local: no usage telemetry, no progress bars in pipeline logs.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        scheme = self._uri.partition("://")[0].lower()
        if _is_database_uri(self._uri):
            _probe_database(self._uri)
        elif scheme in {"http", "https"}:
            _probe_server(self._uri)
        from mlflow import MlflowClient

        with self._errors("connect"):
            client = MlflowClient(tracking_uri=self._uri, registry_uri=self._uri)
            client.search_registered_models(max_results=1)
        self._client = client
        return client

    def _experiment(self) -> str:
        """The id of ``registry.experiment``, created with ``registry.artifact_location`` when missing."""
        if self._experiment_id is not None:
            return self._experiment_id
        client = self._connect()
        name = self._cfg.experiment
        location = self._cfg.artifact_location
        if not location and _is_database_uri(self._uri):
            # Without it MLflow would put artifacts under ./mlruns in whatever directory we run from.
            raise RegistryError(
                f"registry.artifact_location is empty for the database registry at {self.uri}; "
                "load the configuration with load_config() so it is resolved"
            )
        with self._errors(f"open experiment {name!r}"):
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                from mlflow.exceptions import MlflowException

                try:
                    experiment_id = client.create_experiment(name, artifact_location=location or None)
                except MlflowException as exc:
                    # Another process created it between the lookup and the create.
                    experiment = client.get_experiment_by_name(name)
                    if experiment is None:
                        raise exc from None
                    experiment_id = experiment.experiment_id
            elif experiment.lifecycle_stage == "deleted":
                raise RegistryError(
                    f"experiment {name!r} is deleted in the registry at {self.uri}; restore it "
                    "(mlflow experiments restore) or set registry.experiment to another name"
                )
            else:
                experiment_id = experiment.experiment_id
        self._experiment_id = str(experiment_id)
        return self._experiment_id

    # -- reading ----------------------------------------------------------------------------------------

    def _aliases(self) -> dict[str, str]:
        """Alias -> version for the registered model; empty when the model does not exist yet."""
        from mlflow.exceptions import MlflowException

        client = self._connect()
        with self._errors(f"read registered model {self.name!r}"):
            try:
                model = client.get_registered_model(self.name)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return {}
                raise
        return {str(alias): str(version) for alias, version in (model.aliases or {}).items()}

    def _info(self, mv: ModelVersion, aliases: Mapping[str, str] | None = None) -> ModelVersionInfo:
        version = str(mv.version)
        if aliases is None:
            names = tuple(sorted(mv.aliases or ()))
        else:
            names = tuple(sorted(alias for alias, v in aliases.items() if v == version))
        return ModelVersionInfo(
            name=str(mv.name),
            version=version,
            aliases=names,
            tags={str(k): str(v) for k, v in (mv.tags or {}).items()},
            run_id=str(mv.run_id or ""),
            source=str(mv.source or ""),
        )

    def get(self, version: str) -> ModelVersionInfo:
        """One version of the registered model.

        Raises:
            RegistryError: The version (or the registered model) does not exist, or the registry is unreachable.
        """
        from mlflow.exceptions import MlflowException

        client = self._connect()
        version = str(version).strip()
        if not version.isdigit():
            raise RegistryError(f"{version!r} is not a version number of {self.name} (expected e.g. '3')")
        with self._errors(f"read version {version} of {self.name}"):
            try:
                mv = client.get_model_version(self.name, version)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    raise RegistryError(
                        f"version {version} of {self.name} not found in the registry at {self.uri}"
                    ) from None
                raise
        return self._info(mv)

    def versions(self) -> list[ModelVersionInfo]:
        """Every version of the registered model, oldest first; empty when none was registered."""
        client = self._connect()
        aliases = self._aliases()
        found: list[ModelVersion] = []
        with self._errors(f"list versions of {self.name}"):
            escaped = self.name.replace("'", "\\'")
            token: str | None = None
            while True:
                page = client.search_model_versions(f"name = '{escaped}'", max_results=1000, page_token=token)
                found.extend(page)
                token = page.token
                if not token:
                    break
        return sorted((self._info(mv, aliases) for mv in found), key=lambda info: int(info.version))

    def champion(self, environment: str, *, legacy: bool = False) -> ModelVersionInfo | None:
        """The version ``environment`` serves (alias ``champion-<environment>``), or None when it has none.

        Args:
            environment: The GitOps environment, e.g. ``dev``.
            legacy: ``environment`` is the configured one (``gitops.environment``): without its own alias,
                the plain ``champion`` alias of an older registry stands for it (see the module).
        """
        aliases = self._aliases()
        version = aliases.get(champion_alias(environment))
        if version is None and legacy:
            version = aliases.get(LEGACY_CHAMPION)
        return None if version is None else self.get(version)

    def champions(self) -> dict[str, str]:
        """Environment -> version of every ``champion-<environment>`` alias (the legacy alias is not one)."""
        return {
            alias.removeprefix(CHAMPION_PREFIX): version
            for alias, version in sorted(self._aliases().items())
            if alias.startswith(CHAMPION_PREFIX)
        }

    def aliases(self) -> dict[str, str]:
        """Alias -> version of every alias of the registered model (empty before the first version)."""
        return dict(sorted(self._aliases().items()))

    def challenger(self) -> ModelVersionInfo | None:
        """The version the ``challenger`` alias names (the newest registered), or None."""
        version = self._aliases().get(CHALLENGER)
        return None if version is None else self.get(version)

    def resolve(self, reference: str | None, *, environment: str | None = None) -> ModelVersionInfo:
        """The version a reference names: ``NAME@ALIAS``, ``NAME/VERSION``, ``@ALIAS`` (e.g.
        ``@champion-prod``), ``VERSION``, or None for ``environment``'s champion. ``NAME``, when given,
        must be this registry's model name.

        Args:
            reference: The reference.
            environment: The configured environment (``gitops.environment``): None names its champion,
                and ``@champion-<environment>`` falls back to the legacy ``champion`` alias (see
                :meth:`champion`).

        Raises:
            RegistryError: The name is another model's, the alias points nowhere, the version does not
                exist, no reference and no environment are given, or the registry is unreachable.
        """
        if reference is None and environment is None:
            raise RegistryError("name a version or alias: there is no environment whose champion to take")
        ref = (reference or f"@{champion_alias(environment or '')}").strip()
        name, at, alias = ref.partition("@")
        if not at:
            name, slash, alias = ref.rpartition("/")
            if not slash:
                name = ""
        if name and name != self.name:
            raise RegistryError(
                f"{reference!r} names model {name!r}, but this registry holds {self.name!r} (registry.model_name)"
            )
        if at:
            aliases = self._aliases()
            if environment and alias == champion_alias(environment) and LEGACY_CHAMPION in aliases:
                aliases.setdefault(alias, aliases[LEGACY_CHAMPION])
            if alias not in aliases:
                known = ", ".join(sorted(aliases)) or "none"
                raise RegistryError(f"{self.name} has no version with alias {alias!r} (aliases: {known})")
            return self.get(aliases[alias])
        return self.get(alias)

    def download(self, version: str, artifact: str, dst: Path) -> Path:
        """Download one artifact folder of a version.

        Args:
            version: The version number.
            artifact: ``"model"``, ``"reference"`` or ``"evaluation"``.
            dst: Parent folder; the artifact lands in ``dst/<artifact>`` (replacing what was there).

        Returns:
            The local folder ``dst/<artifact>``.

        Raises:
            RegistryError: Unknown artifact name, missing version, or the download failed.
        """
        if artifact not in ARTIFACTS:
            raise RegistryError(
                f"unknown artifact {artifact!r}; a registered version holds {list(ARTIFACTS)}"
            )
        info = self.get(version)
        if not info.run_id:
            raise RegistryError(
                f"version {info.version} of {self.name} has no run to download {artifact}/ from"
            )
        client = self._connect()
        target = Path(dst) / artifact
        target.parent.mkdir(parents=True, exist_ok=True)
        # MLflow downloads into <folder>/<artifact>: into scratch space, then its contents are published.
        with (
            tempfile.TemporaryDirectory(
                prefix=f".{artifact}.", suffix=".download", dir=target.parent
            ) as scratch,
            staged_dir(target) as staging,
        ):
            with self._errors(f"download {artifact}/ of version {info.version} of {self.name}"):
                local = Path(client.download_artifacts(info.run_id, artifact, scratch))
            if not local.is_dir() or not any(local.iterdir()):
                raise RegistryError(
                    f"version {info.version} of {self.name} has no {artifact}/ artifacts (run {info.run_id})"
                )
            for entry in list(local.iterdir()):
                os.replace(entry, staging / entry.name)
        return target

    # -- writing ----------------------------------------------------------------------------------------

    def _ensure_registered_model(self, client: MlflowClient) -> None:
        from mlflow.exceptions import MlflowException

        try:
            client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            try:
                client.create_registered_model(
                    self.name, description="Text classifier trained and promoted by refinery."
                )
            except MlflowException as again:
                if again.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

    def register(
        self,
        model_dir: Path,
        reference_dir: Path,
        evaluation_dir: Path,
        tags: dict[str, str],
        metrics: dict[str, float],
        params: Mapping[str, Any] | None = None,
        card: str | None = None,
    ) -> ModelVersionInfo:
        """Log a trained model as a new version and point the ``challenger`` alias at it.

        Args:
            model_dir: The saved model directory (logged as ``model/``).
            reference_dir: Folder holding ``reference.parquet`` (the prepared data dir), or that file;
                it is logged as ``reference/reference.parquet``, and ``profile.json`` beside it, when
                there is one, as ``reference/profile.json``. Nothing else of the folder is logged.
            evaluation_dir: The evaluation outputs (logged as ``evaluation/``).
            tags: Lineage tags set on the version and on its run.
            metrics: Numbers logged as run metrics.
            params: Optional run parameters (hyper-parameters), logged as strings.
            card: The model card (Markdown): logged as ``model_card.md`` and made the version's
                description, which the MLflow UI shows.

        Returns:
            The new version, with the ``challenger`` alias.

        Raises:
            RegistryError: A folder is missing or empty, or the registry is unreachable or refuses the write.
        """
        model_dir, evaluation_dir = Path(model_dir), Path(evaluation_dir)
        reference = Path(reference_dir)
        if reference.is_dir():
            reference = reference / REFERENCE_FILE
        if not reference.is_file():
            raise RegistryError(f"reference profile not found: {reference}")
        profile = reference.with_name(PROFILE_FILE)
        for role, folder in (("model", model_dir), ("evaluation", evaluation_dir)):
            if not folder.is_dir() or not any(folder.iterdir()):
                raise RegistryError(f"{role} folder to register is missing or empty: {folder}")
        clean_tags = {str(k): str(v) for k, v in tags.items()}
        clean_metrics = {str(k): float(v) for k, v in metrics.items()}

        client = self._connect()
        experiment_id = self._experiment()
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.time import get_current_time_millis

        with self._errors(f"register a new version of {self.name}"):
            run = client.create_run(
                experiment_id,
                run_name=f"register-{self.name}",
                tags={**clean_tags, "refinery.step": "register"},
            )
            run_id = run.info.run_id
            try:
                now = get_current_time_millis()
                client.log_batch(
                    run_id,
                    metrics=[Metric(k, v, now, 0) for k, v in clean_metrics.items()],
                    params=[Param(str(k), str(v)) for k, v in (params or {}).items()],
                    tags=[RunTag("mlflow.note.content", f"Registered as a version of {self.name}.")],
                )
                client.log_artifacts(run_id, str(model_dir), "model")
                client.log_artifact(run_id, str(reference), "reference")
                if profile.is_file():
                    client.log_artifact(run_id, str(profile), "reference")
                client.log_artifacts(run_id, str(evaluation_dir), "evaluation")
                if card is not None:
                    client.log_text(run_id, card, CARD_FILE)
            except BaseException:
                client.set_terminated(run_id, "FAILED")
                raise
            client.set_terminated(run_id, "FINISHED")

            self._ensure_registered_model(client)
            # The source is the run's artifact root, so every artifact folder of the version
            # (model/, reference/, evaluation/) hangs off one place.
            mv = client.create_model_version(
                self.name, source=f"runs:/{run_id}/", run_id=run_id, tags=clean_tags, description=card
            )
            client.set_registered_model_alias(self.name, CHALLENGER, str(mv.version))
        return self.get(str(mv.version))

    def find(self, tag: str, value: str) -> ModelVersionInfo | None:
        """The newest version whose tag ``tag`` is ``value``, or None.

        Raises:
            RegistryError: The registry is unreachable.
        """
        found = [info for info in self.versions() if info.tags.get(tag) == value]
        return found[-1] if found else None

    def set_challenger(self, version: str) -> None:
        """Point the ``challenger`` alias at ``version``.

        Raises:
            RegistryError: The version does not exist, or the registry is unreachable.
        """
        self._set_alias(CHALLENGER, version)

    def tag(self, version: str, tags: dict[str, str]) -> None:
        """Set tags on an existing version (e.g. ``bento_tag``, ``gitops_commit``).

        Raises:
            RegistryError: The version does not exist, or the registry is unreachable.
        """
        info = self.get(version)
        client = self._connect()
        with self._errors(f"tag version {info.version} of {self.name}"):
            for key, value in tags.items():
                client.set_model_version_tag(self.name, info.version, str(key), str(value))

    def set_champion(self, version: str, environment: str) -> None:
        """Point ``champion-<environment>`` at ``version`` (one update; the previous champion loses it).

        Raises:
            RegistryError: The version does not exist, or the registry is unreachable.
        """
        self._set_alias(champion_alias(environment), version)

    def untag(self, version: str, keys: list[str]) -> None:
        """Remove tags from a version; a tag it does not have is skipped.

        Raises:
            RegistryError: The version does not exist, or the registry is unreachable.
        """
        info = self.get(version)
        client = self._connect()
        with self._errors(f"untag version {info.version} of {self.name}"):
            for key in keys:
                if key in info.tags:
                    client.delete_model_version_tag(self.name, info.version, key)

    def remove_alias(self, alias: str) -> None:
        """Delete ``alias`` from the registered model; an alias that does not exist is no error.

        Raises:
            RegistryError: The registry is unreachable.
        """
        if alias not in self._aliases():
            return
        client = self._connect()
        with self._errors(f"remove the {alias} alias of {self.name}"):
            client.delete_registered_model_alias(self.name, alias)

    def _set_alias(self, alias: str, version: str) -> None:
        info = self.get(version)
        client = self._connect()
        with self._errors(f"move the {alias} alias of {self.name} to version {info.version}"):
            client.set_registered_model_alias(self.name, alias, info.version)
