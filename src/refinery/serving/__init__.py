"""What the BentoML service does, apart from BentoML: check requests, predict, log every prediction,
and store the labels users send back about predictions (feedback).

``serving/service.py`` is a thin shell over :class:`ClassificationService`. Its settings reach it as
environment variables (see :class:`ServiceSettings`), built from the resolved run configuration by
:func:`serve_command` (embedded deployment) or set by the Kubernetes manifests (cluster); the service
reads them once at startup and nothing else here reads the environment.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.config import ModelConfig, ServingConfig
from refinery.errors import ConfigError, RefineryError

if TYPE_CHECKING:
    from refinery.config import RunConfig
    from refinery.modeling import Classifier
    from refinery.monitoring.inference_log import FeedbackRecord, InferenceLog

ENV_INFERENCE_LOG = "REFINERY_INFERENCE_LOG"
ENV_MAX_TEXT_CHARS = "REFINERY_MAX_TEXT_CHARS"
ENV_MAX_BATCH_ITEMS = "REFINERY_MAX_BATCH_ITEMS"
ENV_MAX_LENGTH = "REFINERY_MAX_LENGTH"
# The release a serving container runs: set by the overlay's refinery-release ConfigMap, which each
# promotion rewrites (refinery.gitops.repo), and read by `refinery serve` without a configuration.
ENV_MODEL_NAME = "REFINERY_MODEL_NAME"
ENV_MODEL_VERSION = "REFINERY_MODEL_VERSION"
ENV_BENTO_TAG = "REFINERY_BENTO_TAG"
ENV_BENTO_URI = "REFINERY_BENTO_URI"
ENV_BENTO_SHA256 = "REFINERY_BENTO_SHA256"

# Labels and metadata recorded on the model in the BentoML store by refinery.packaging.bento.
MODEL_LABEL_NAME = "refinery.model_name"
MODEL_LABEL_VERSION = "refinery.model_version"
MODEL_METADATA_MAX_LENGTH = "max_length"


class InvalidRequest(RefineryError):
    """A classification request is malformed; the message names the item and the limit at fault."""


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the running service needs besides the model.

    Attributes:
        inference_log: SQLAlchemy URL of the inference log every prediction is appended to.
        max_text_chars: Longest text accepted, in characters.
        max_batch_items: Most texts accepted in one request.
        max_length: Texts are truncated to this many tokens; None means the value recorded with the
            model when it was packaged.
    """

    inference_log: str
    max_text_chars: int = ServingConfig.model_fields["max_text_chars"].default
    max_batch_items: int = ServingConfig.model_fields["max_batch_items"].default
    max_length: int | None = None

    @classmethod
    def from_config(cls, cfg: RunConfig) -> ServiceSettings:
        """Settings from a resolved run configuration."""
        if not cfg.serving.inference_log:
            raise ConfigError("serving.inference_log is empty; load the configuration with load_config")
        return cls(
            inference_log=cfg.serving.inference_log,
            max_text_chars=cfg.serving.max_text_chars,
            max_batch_items=cfg.serving.max_batch_items,
            max_length=cfg.model.max_length,
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that carry these settings to the service."""
        env = {
            ENV_INFERENCE_LOG: self.inference_log,
            ENV_MAX_TEXT_CHARS: str(self.max_text_chars),
            ENV_MAX_BATCH_ITEMS: str(self.max_batch_items),
        }
        if self.max_length is not None:
            env[ENV_MAX_LENGTH] = str(self.max_length)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServiceSettings:
        """Settings from environment variables (read by the service at startup).

        Raises:
            ConfigError: The inference log variable is missing, or a number is not a positive integer;
                the message names the variable.
        """
        url = environ.get(ENV_INFERENCE_LOG, "").strip()
        if not url:
            raise ConfigError(
                f"{ENV_INFERENCE_LOG} is not set: the service needs the SQLAlchemy URL of the inference log "
                "(serving.inference_log); `refinery serve` and the Kubernetes manifests set it"
            )

        def positive(name: str, default: int | None) -> int | None:
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not an integer") from None
            if value < 1:
                raise ConfigError(f"{name}={raw!r} must be at least 1")
            return value

        return cls(
            inference_log=url,
            max_text_chars=positive(ENV_MAX_TEXT_CHARS, cls.max_text_chars) or cls.max_text_chars,
            max_batch_items=positive(ENV_MAX_BATCH_ITEMS, cls.max_batch_items) or cls.max_batch_items,
            max_length=positive(ENV_MAX_LENGTH, None),
        )


@dataclass(frozen=True)
class Classification:
    """The answer for one text.

    Attributes:
        label: The most probable label.
        scores: Probability of every label.
        model_version: Registered version of the model that answered.
        prediction_id: Id of the prediction in the inference log; feedback names it.
    """

    label: str
    scores: dict[str, float]
    model_version: str
    prediction_id: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form: ``{"label", "scores", "model_version", "prediction_id"}``."""
        return {
            "label": self.label,
            "scores": dict(self.scores),
            "model_version": self.model_version,
            "prediction_id": self.prediction_id,
        }


def validate_texts(texts: object, max_text_chars: int, max_batch_items: int) -> list[str]:
    """Check a request's ``texts`` and return them as a list.

    Args:
        texts: One string or a list of strings, as the client sent it.
        max_text_chars: Longest text accepted, in characters.
        max_batch_items: Most texts accepted in one request.

    Returns:
        The texts as a list (a single string becomes a one-item list).

    Raises:
        InvalidRequest: ``texts`` is not a string or list, is empty, has too many items, or an item is not
            a string, is blank or too long; the message names the item index and the limit.
    """
    single = isinstance(texts, str)
    if single:
        items: list[object] = [texts]
    elif isinstance(texts, list | tuple):
        items = list(texts)
    else:
        raise InvalidRequest(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    if not items:
        raise InvalidRequest("texts is an empty list; send at least one text")
    if len(items) > max_batch_items:
        raise InvalidRequest(
            f"texts has {len(items)} items; at most {max_batch_items} are accepted per request "
            "(serving.max_batch_items)"
        )
    from refinery.monitoring.inference_log import text_problem

    for i, item in enumerate(items):
        problem = text_problem(item, "texts" if single else f"texts[{i}]", max_text_chars)
        if problem:
            raise InvalidRequest(problem)
    return [str(item) for item in items]


class ClassificationService:
    """A loaded classifier that checks requests, predicts and logs each prediction."""

    def __init__(
        self,
        classifier: Classifier,
        model_name: str,
        model_version: str,
        settings: ServiceSettings,
        log: InferenceLog,
    ) -> None:
        self.classifier = classifier
        self.model_name = model_name
        self.model_version = model_version
        self.settings = settings
        self.log = log

    @classmethod
    def load(
        cls, model_dir: Path, model_name: str, model_version: str, settings: ServiceSettings
    ) -> ClassificationService:
        """Load the model in ``model_dir`` and open the inference log named by ``settings``.

        Args:
            model_dir: A model directory (``save_pretrained`` output, safetensors).
            model_name: Registered model name, recorded with every prediction.
            model_version: Registered model version, returned and recorded with every prediction.
            settings: Limits, token length and inference log URL.

        Raises:
            ModelLoadError: The model cannot be loaded.
            MonitoringError: The inference log URL is malformed.
        """
        from refinery.modeling import load_classifier
        from refinery.monitoring.inference_log import InferenceLog

        classifier = load_classifier(
            Path(model_dir), max_length=settings.max_length or ModelConfig.model_fields["max_length"].default
        )
        return cls(classifier, model_name, model_version, settings, InferenceLog(settings.inference_log))

    @classmethod
    def from_packaged_model(
        cls,
        model_dir: Path,
        labels: Mapping[str, str],
        metadata: Mapping[str, Any],
        settings: ServiceSettings,
    ) -> ClassificationService:
        """Load a model imported into the BentoML store by :func:`refinery.packaging.bento.package`.

        The registered name and version come from the store model's labels; the token length from
        ``settings`` or else from the length recorded at packaging.

        Raises:
            ConfigError: The store model lacks the labels packaging records.
            ModelLoadError: The model cannot be loaded.
        """
        missing = [key for key in (MODEL_LABEL_NAME, MODEL_LABEL_VERSION) if not labels.get(key)]
        if missing:
            raise ConfigError(
                f"model in {model_dir} has no label(s) {', '.join(missing)}; package it with the pipeline's package step"
            )
        recorded = metadata.get(MODEL_METADATA_MAX_LENGTH)
        max_length = settings.max_length or (int(recorded) if recorded else None)
        resolved = ServiceSettings(
            inference_log=settings.inference_log,
            max_text_chars=settings.max_text_chars,
            max_batch_items=settings.max_batch_items,
            max_length=max_length,
        )
        return cls.load(model_dir, labels[MODEL_LABEL_NAME], labels[MODEL_LABEL_VERSION], resolved)

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels the model can answer, in class-index order."""
        return tuple(self.classifier.labels)

    def classify(self, texts: object) -> list[Classification]:
        """Validate ``texts``, predict each, append the predictions to the inference log.

        Args:
            texts: One string or a list of strings.

        Returns:
            One :class:`Classification` per text, in request order.

        Raises:
            InvalidRequest: The request is malformed (nothing is predicted or logged).
            MonitoringError: The predictions could not be logged.
        """
        from refinery.monitoring.inference_log import PredictionRecord

        items = validate_texts(texts, self.settings.max_text_chars, self.settings.max_batch_items)
        predictions = self.classifier.predict(items)
        records = [
            PredictionRecord(
                text=text,
                label=p.label,
                scores=dict(p.scores),
                model_name=self.model_name,
                model_version=self.model_version,
            )
            for text, p in zip(items, predictions, strict=True)
        ]
        self.log.append(records)
        return [Classification(r.label, r.scores, self.model_version, r.prediction_id) for r in records]

    def feedback(self, items: object) -> list[FeedbackRecord]:
        """Store the labels users send about predictions (by ``prediction_id``) or texts.

        The labels a user may give are the served model's; the limits are the service's
        (``max_text_chars`` per text, ``max_batch_items`` items per request). See
        :meth:`refinery.monitoring.inference_log.InferenceLog.add_feedback`.

        Args:
            items: The request's items: mappings with ``label`` and one of ``prediction_id`` or ``text``.

        Returns:
            The stored rows, in request order.

        Raises:
            InvalidFeedback: The request is malformed (400), names an unknown prediction (404) or labels a
                text twice (409); nothing is stored.
            MonitoringError: The inference log cannot be read or written.
        """
        return self.log.add_feedback(
            items, self.labels, self.settings.max_text_chars, max_items=self.settings.max_batch_items
        )


def bentoml_serve_argv(bento_tag: str, host: str, port: int) -> list[str]:
    """``bentoml serve`` of a Bento in the BentoML home, with this interpreter's BentoML.

    Raises:
        ConfigError: The tag is not ``name:version``.
    """
    if not bento_tag or ":" not in bento_tag:
        raise ConfigError(f"bento tag {bento_tag!r} is not of the form name:version")
    return [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", host, "--port", str(port)]


def serve_command(cfg: RunConfig, bento_tag: str) -> tuple[list[str], dict[str, str]]:
    """The command that serves a Bento, fetched into ``packaging.bentoml_home``, on this machine.

    Args:
        cfg: Resolved run configuration (BentoML home, host, port, limits, inference log).
        bento_tag: The Bento to serve (see :func:`refinery.packaging.bento.fetch`).

    Returns:
        ``(argv, env)``: argv runs this interpreter's BentoML; env holds only the variables to set on
        top of the current environment (``BENTOML_HOME`` and the :class:`ServiceSettings` variables).

    Raises:
        ConfigError: The configuration is not resolved (no BentoML home or inference log).
    """
    if not cfg.packaging.bentoml_home:
        raise ConfigError("packaging.bentoml_home is empty; load the configuration with load_config")
    argv = bentoml_serve_argv(bento_tag, cfg.serving.host, cfg.serving.port)
    env = {"BENTOML_HOME": cfg.packaging.bentoml_home, **ServiceSettings.from_config(cfg).to_env()}
    return argv, env


def release_from_env(environ: Mapping[str, str]) -> tuple[str, str, str]:
    """The Bento a serving container runs: its tag, store URI and SHA-256, from the release variables.

    Raises:
        ConfigError: A variable is missing (the message names it) or says nothing was released yet.
    """
    values = {
        name: environ.get(name, "").strip() for name in (ENV_BENTO_TAG, ENV_BENTO_URI, ENV_BENTO_SHA256)
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set: without -c, refinery serve runs the release these variables name"
            " (the refinery-release ConfigMap of a promoted overlay sets them)"
        )
    if environ.get(ENV_MODEL_VERSION) == "none":
        raise ConfigError(f"{ENV_MODEL_VERSION} is 'none': nothing has been promoted to this environment yet")
    return values[ENV_BENTO_TAG], values[ENV_BENTO_URI], values[ENV_BENTO_SHA256]
