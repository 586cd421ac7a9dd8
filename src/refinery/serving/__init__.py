"""What the BentoML service does, apart from BentoML: check requests, predict, log every prediction,
and store the labels users send back about predictions (feedback).

``serving/service.py`` is a thin shell over :class:`ClassificationService`. Its settings reach it as
environment variables (see :class:`ServiceSettings`), built from the resolved run configuration by
:func:`serve_command` (embedded deployment) or set by the Kubernetes manifests (cluster); the service
reads them once at startup and nothing else here reads the environment.

Serving depends on core modules only (:mod:`refinery.modeling`, :mod:`refinery.pooling`,
:mod:`refinery.architecture`, the inference log, the configuration), never on training, data, evaluation
or pipeline code: a Bento ships only the modules the service imports
(:func:`refinery.packaging.bento.served_sources`), and tests/serving/test_serving_without_training.py
serves one with those packages unimportable.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from refinery.config import ModelConfig, ServingConfig
from refinery.errors import ConfigError, RefineryError
from refinery.results import Record

if TYPE_CHECKING:
    from refinery.config import RunConfig
    from refinery.modeling import Classifier, Prediction
    from refinery.monitoring.inference_log import FeedbackRecord, InferenceLog
    from refinery.serving.onnx import OnnxClassifier

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
MODEL_METADATA_RUNTIME = "runtime"

# How long /feedback waits for queued predictions to reach the inference log before looking one up.
_FEEDBACK_FLUSH_S = 10.0

logger = logging.getLogger(__name__)


class InvalidRequest(RefineryError):
    """A classification request is malformed; the message names the item and the limit at fault."""


def _serving_default(name: str) -> Any:
    return ServingConfig.model_fields[name].default


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the running service needs besides the model; each is a ``serving.*`` setting of the
    same name (see :class:`refinery.config.ServingConfig`) and travels as the variable
    ``REFINERY_<NAME>``, e.g. ``REFINERY_MAX_QUEUED_TEXTS``.

    Attributes:
        inference_log: SQLAlchemy URL of the inference log every prediction is appended to.
        max_length: Texts are truncated to this many tokens; None means the value recorded with the
            model when it was packaged (``model.max_length``).
        The others: request limits, batching, the inference-log queue and the workers.
    """

    inference_log: str
    max_text_chars: int = _serving_default("max_text_chars")
    max_batch_items: int = _serving_default("max_batch_items")
    max_length: int | None = None
    workers: int = _serving_default("workers")
    threads: int | None = None
    max_batch_size: int = _serving_default("max_batch_size")
    batch_wait_ms: float = _serving_default("batch_wait_ms")
    max_queued_texts: int = _serving_default("max_queued_texts")
    log_queue_rows: int = _serving_default("log_queue_rows")
    log_batch_rows: int = _serving_default("log_batch_rows")
    max_request_bytes: int = _serving_default("max_request_bytes")
    retry_after_s: int = _serving_default("retry_after_s")

    @classmethod
    def from_config(cls, cfg: RunConfig) -> ServiceSettings:
        """Settings from a resolved run configuration."""
        if not cfg.serving.inference_log:
            raise ConfigError("serving.inference_log is empty; load the configuration with load_config")
        serving = cfg.serving.model_dump()
        values = {f.name: serving[f.name] for f in fields(cls) if f.name in serving}
        return cls(**{**values, "max_length": cfg.model.max_length})

    def to_env(self) -> dict[str, str]:
        """The environment variables that carry these settings to the service (unset ones are left out)."""
        return {
            env_name(f.name): str(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServiceSettings:
        """Settings from environment variables (read by the service at startup); unset ones keep their
        defaults.

        Raises:
            ConfigError: The inference log variable is missing, or a number is not a positive number (or
                0 for the batch wait); the message names the variable.
        """
        url = environ.get(ENV_INFERENCE_LOG, "").strip()
        if not url:
            raise ConfigError(
                f"{ENV_INFERENCE_LOG} is not set: the service needs the SQLAlchemy URL of the inference log "
                "(serving.inference_log); `refinery serve` and the Kubernetes manifests set it"
            )
        values: dict[str, Any] = {"inference_log": url}
        for f in fields(cls):
            raw = environ.get(env_name(f.name), "").strip()
            if f.name == "inference_log" or not raw:
                continue
            number = float if f.name == "batch_wait_ms" else int
            try:
                value = number(raw)
            except ValueError:
                raise ConfigError(
                    f"{env_name(f.name)}={raw!r} is not {'a number' if number is float else 'an integer'}"
                ) from None
            if value < (0 if number is float else 1):
                raise ConfigError(
                    f"{env_name(f.name)}={raw!r} must be at least {0 if number is float else 1}"
                )
            values[f.name] = value
        return cls(**values)

    def replace(self, **changes: Any) -> ServiceSettings:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


def env_name(setting: str) -> str:
    """The environment variable that carries the service setting ``setting`` (``REFINERY_<NAME>``)."""
    return f"REFINERY_{setting.upper()}"


@dataclass(frozen=True)
class Classification(Record):
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


class ServingHooks(Protocol):
    """What the service reports as it works (the Prometheus metrics of :mod:`refinery.serving.metrics`)."""

    def batch(self, size: int) -> None: ...
    def predicted(self, labels: Sequence[str]) -> None: ...
    def log_write_failed(self, endpoint: str) -> None: ...
    def log_queue(self, rows: int) -> None: ...
    def rejected(self, endpoint: str, reason: str) -> None: ...


class ClassificationService:
    """A loaded classifier that checks requests, batches them into the model and logs each prediction.

    Predictions go through a :class:`~refinery.serving.batching.Batcher` and their rows through a
    :class:`~refinery.serving.log_writer.LogWriter`; :meth:`close` drains both (the service's shutdown).
    """

    def __init__(
        self,
        classifier: Classifier | OnnxClassifier,
        model_name: str,
        model_version: str,
        settings: ServiceSettings,
        log: InferenceLog,
        *,
        runtime: str = "torch",
        hooks: ServingHooks | None = None,
    ) -> None:
        from refinery.serving.batching import Batcher
        from refinery.serving.log_writer import LogWriter

        self.classifier = classifier
        self.model_name = model_name
        self.model_version = model_version
        self.settings = settings
        self.log = log
        self.runtime = runtime
        self.hooks = hooks
        self.batcher: Batcher[Prediction] = Batcher(
            lambda texts: classifier.predict(texts, batch_size=len(texts)),
            max_batch_size=settings.max_batch_size,
            max_queued=settings.max_queued_texts,
            max_wait_ms=settings.batch_wait_ms,
            retry_after_s=settings.retry_after_s,
            on_batch=hooks.batch if hooks else None,
        )
        self.writer = LogWriter(
            log,
            capacity=settings.log_queue_rows,
            batch_rows=settings.log_batch_rows,
            retry_after_s=settings.retry_after_s,
            on_failure=(lambda _exc: hooks.log_write_failed("/classify")) if hooks else None,
            on_depth=hooks.log_queue if hooks else None,
        )

    @classmethod
    def load(
        cls,
        model_dir: Path,
        model_name: str,
        model_version: str,
        settings: ServiceSettings,
        *,
        runtime: str = "torch",
        hooks: ServingHooks | None = None,
    ) -> ClassificationService:
        """Load the model in ``model_dir`` and open the inference log named by ``settings``.

        Args:
            model_dir: A model directory (``save_pretrained`` output, safetensors; for the ``onnx-int8``
                runtime also the quantized ONNX file packaging exported).
            model_name: Registered model name, recorded with every prediction.
            model_version: Registered model version, returned and recorded with every prediction.
            settings: Limits, token length, batching, threads and inference log URL.
            runtime: ``torch`` (fp32) or ``onnx-int8`` (ONNX Runtime on the quantized export).
            hooks: Where to report batches, predictions and the log's state (metrics).

        Raises:
            ModelLoadError: The model cannot be loaded.
            MonitoringError: The inference log URL is malformed.
            ConfigError: ``runtime`` is not one refinery serves.
        """
        from refinery.monitoring.inference_log import InferenceLog

        max_length = settings.max_length or ModelConfig.model_fields["max_length"].default
        threads = settings.threads or max(1, available_cpus() // settings.workers)
        classifier: Classifier | OnnxClassifier
        if runtime == "torch":
            import torch

            from refinery.modeling import load_classifier

            torch.set_num_threads(threads)
            classifier = load_classifier(Path(model_dir), max_length=max_length)
        elif runtime == "onnx-int8":
            from refinery.serving.onnx import load_onnx_classifier

            classifier = load_onnx_classifier(Path(model_dir), max_length=max_length, threads=threads)
        else:
            raise ConfigError(f"runtime {runtime!r} of {model_dir} is not one of torch, onnx-int8")
        logger.info("%s runtime with %d threads, %d worker(s)", runtime, threads, settings.workers)
        log = InferenceLog(settings.inference_log)
        return cls(classifier, model_name, model_version, settings, log, runtime=runtime, hooks=hooks)

    @classmethod
    def from_packaged_model(
        cls,
        model_dir: Path,
        labels: Mapping[str, str],
        metadata: Mapping[str, Any],
        settings: ServiceSettings,
        hooks: ServingHooks | None = None,
    ) -> ClassificationService:
        """Load a model imported into the BentoML store by :func:`refinery.packaging.bento.package`.

        The registered name and version come from the store model's labels; the token length from
        ``settings`` or else from the length recorded at packaging; the runtime from the packaging record.

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
        return cls.load(
            model_dir,
            labels[MODEL_LABEL_NAME],
            labels[MODEL_LABEL_VERSION],
            settings.replace(max_length=max_length),
            runtime=str(metadata.get(MODEL_METADATA_RUNTIME) or "torch"),
            hooks=hooks,
        )

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels the model can answer, in class-index order."""
        return tuple(self.classifier.labels)

    async def classify(self, texts: object) -> list[Classification]:
        """Validate ``texts``, predict them in the batcher, queue their rows for the inference log.

        Room in the log's queue is reserved before the model runs, so an answered prediction is always
        logged (once the queue drains) and a full queue refuses the request instead.

        Args:
            texts: One string or a list of strings.

        Returns:
            One :class:`Classification` per text, in request order.

        Raises:
            InvalidRequest: The request is malformed (nothing is predicted or logged).
            Overloaded: Too many texts wait for the model.
            LogQueueFull: Too many rows wait for the inference log.
        """
        from refinery.monitoring.inference_log import PredictionRecord
        from refinery.serving.batching import Overloaded
        from refinery.serving.log_writer import LogQueueFull

        items = validate_texts(texts, self.settings.max_text_chars, self.settings.max_batch_items)
        try:
            self.writer.reserve(len(items))
        except LogQueueFull:
            self._rejected("/classify", "overloaded")
            raise
        try:
            predictions = await self.batcher.submit(items)
        except BaseException as exc:
            self.writer.release(len(items))
            if isinstance(exc, Overloaded):
                self._rejected("/classify", "overloaded")
            raise
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
        self.writer.put(records)
        if self.hooks is not None:
            self.hooks.predicted([r.label for r in records])
        return [Classification(r.label, r.scores, self.model_version, r.prediction_id) for r in records]

    def _rejected(self, endpoint: str, reason: str) -> None:
        if self.hooks is not None:
            self.hooks.rejected(endpoint, reason)

    def feedback(self, items: object) -> list[FeedbackRecord]:
        """Store the labels users send about predictions (by ``prediction_id``) or texts.

        Predictions still queued for the inference log are written first, so a label for a prediction
        answered a moment ago finds it. The labels a user may give are the served model's; the limits
        are the service's (``max_text_chars`` per text, ``max_batch_items`` items per request). See
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
        if isinstance(items, list) and any(isinstance(i, Mapping) and i.get("prediction_id") for i in items):
            self.writer.flush(timeout_s=_FEEDBACK_FLUSH_S)
        return self.log.add_feedback(
            items, self.labels, self.settings.max_text_chars, max_items=self.settings.max_batch_items
        )

    async def close(self, timeout_s: float = 30.0) -> int:
        """Finish the queued requests and write every queued prediction (the service's shutdown).

        Returns:
            Predictions left unwritten after ``timeout_s`` (0 when the log drained).
        """
        import asyncio

        await self.batcher.close()
        return await asyncio.to_thread(self.writer.close, timeout_s)


def available_cpus() -> int:
    """CPUs this process may use: its cgroup's CPU limit (a Kubernetes ``limits.cpu``), rounded up, when
    lower than the CPUs it may run on; ``os.cpu_count()`` reports the node's, far too many in a pod."""
    import math
    import os

    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            allowed = min(allowed, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, allowed)


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
