"""The BentoML service: POST /classify over a model packaged by the pipeline's package step, and
POST /feedback, where users send the labels that become new training data.

A thin shell over :class:`refinery.serving.ClassificationService`. Which model it serves is a Bento
argument, ``model_tag``, given at build time by :func:`refinery.packaging.bento.package`; BentoML records
it (and the model) in the Bento, so ``bentoml serve <bento_tag>`` serves exactly the packaged model.
Settings (inference log URL, limits, batching) are read from the environment once, at startup.
Health and metrics endpoints (/livez, /readyz, /metrics) come from BentoML; refinery's own series
(:mod:`refinery.serving.metrics`) appear on /metrics beside BentoML's.
"""

from __future__ import annotations

import logging
import os
import time
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound, ServiceUnavailable
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from refinery.errors import MonitoringError
from refinery.monitoring.inference_log import InvalidFeedback
from refinery.serving import ClassificationService, InvalidRequest, ServiceSettings, env_name
from refinery.serving.batching import Overloaded
from refinery.serving.log_writer import LogQueueFull
from refinery.serving.metrics import PrometheusHooks, prometheus_hooks

logger = logging.getLogger("refinery.service")

# Within Kubernetes' default terminationGracePeriodSeconds (30 s, k8s/base/deployment.yaml), which also
# covers the requests in flight.
DRAIN_TIMEOUT_S = 20.0


class BuildArguments(BaseModel):
    """Bento arguments (``bentoml build --arg model_tag=NAME:VERSION``)."""

    model_tag: str = Field(
        description="Tag of the model in the BentoML model store, e.g. review-sentiment:v3-1a2b."
    )


class Prediction(BaseModel):
    """The answer for one text."""

    label: str = Field(description="The most probable label.")
    scores: dict[str, float] = Field(description="Probability of every label; they sum to 1.")
    model_version: str = Field(description="Registered version of the model that answered.")
    prediction_id: str = Field(description="Id of this prediction; send it back with a label to /feedback.")


class FeedbackItem(BaseModel):
    """One label: for a prediction (by its id) or for a text."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: str | None = Field(
        None, description="The prediction_id /classify answered; give this or text, not both."
    )
    text: str | None = Field(None, description="The labelled text; give this or prediction_id, not both.")
    label: str = Field(description="The right label: one of the served model's labels.")


class FeedbackStored(BaseModel):
    """What /feedback stored."""

    stored: int = Field(description="How many items were stored (all of the request).")
    feedback_ids: list[int] = Field(description="Id of each stored item, in request order.")


class Conflict(BentoMLException):
    """HTTP 409: the request conflicts with what is stored (a text labelled twice)."""

    error_code = HTTPStatus.CONFLICT


_FEEDBACK_ERRORS: dict[int, type[BentoMLException]] = {400: InvalidArgument, 404: NotFound, 409: Conflict}


ARGUMENTS = bentoml.use_arguments(BuildArguments)

#: The largest request body accepted, set from the settings when the service starts; read per request by
#: :class:`RequestLimits`, which BentoML builds before the service exists.
_LIMITS: dict[str, int] = {"max_request_bytes": ServiceSettings.max_request_bytes}


def _refusal(status: int, reason: str, retry_after_s: int | None = None) -> JSONResponse:
    """The answer to a request refused before any work: the reason, and when to try again."""
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


#: The APIs and the one media type they take (BentoML would try multipart and other decoders on them).
_JSON_ROUTES = ("/classify", "/feedback")


class RequestLimits:
    """ASGI middleware in front of the APIs: a body that is not JSON is answered 415, and one larger
    than ``serving.max_request_bytes`` 413, before BentoML parses it (by its Content-Length, or while it
    streams in when it has none)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        limit = _LIMITS["max_request_bytes"]
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        media_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if path in _JSON_ROUTES and media_type != b"application/json":
            shown = media_type.decode("latin-1")[:100]
            await _refusal(415, f"{path} takes a JSON body (Content-Type: application/json), not {shown!r}")(
                scope, receive, send
            )
            return
        declared = headers.get(b"content-length")
        too_large = f"the request body is larger than {limit} bytes (serving.max_request_bytes)"
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refused_too_large(path, too_large, scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await _refused_too_large(path, too_large, scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refused_too_large(path: str, reason: str, scope: Any, receive: Any, send: Any) -> None:
    if _HOOKS is not None:
        _HOOKS.rejected(path, "too_large")
    await _refusal(413, reason)(scope, receive, send)


_HOOKS: PrometheusHooks | None = None


def _log_like_bentoml() -> None:
    """refinery's INFO messages (the model served, the drain at shutdown) through BentoML's handlers,
    which are the only ones a `bentoml serve` worker has."""
    ours = logging.getLogger("refinery")
    if not ours.handlers:
        for handler in logging.getLogger("bentoml").handlers:
            ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = not ours.handlers


@bentoml.service(
    name="refinery-classifier",
    # Read when `bentoml serve` imports this module: the one setting that shapes the processes.
    workers=int(os.environ.get(env_name("workers"), "") or ServiceSettings.workers),
    traffic={"timeout": 60},
)
class Classifier:
    """Text classification with every prediction appended to the inference log."""

    model = bentoml.models.BentoModel(ARGUMENTS.model_tag)

    def __init__(self) -> None:
        global _HOOKS
        _log_like_bentoml()
        stored = self.model
        settings = ServiceSettings.from_env(os.environ)
        _LIMITS["max_request_bytes"] = settings.max_request_bytes
        _HOOKS = self.hooks = prometheus_hooks()
        self.core = ClassificationService.from_packaged_model(
            Path(stored.path), stored.info.labels, stored.info.metadata, settings, hooks=self.hooks
        )
        self.hooks.serving(self.core.model_name, self.core.model_version, self.core.runtime, self.core.labels)
        logger.info(
            "serving %s version %s (labels %s, %s runtime), inference log %s",
            self.core.model_name,
            self.core.model_version,
            ", ".join(self.core.labels),
            self.core.runtime,
            self.core.log.url,
        )

    @bentoml.on_shutdown
    async def drain(self) -> None:
        """On SIGTERM: answer what is queued, then write every queued prediction to the inference log."""
        logger.info(
            "shutting down: %d texts wait for the model, %d predictions for the inference log",
            self.core.batcher.queued,
            self.core.writer.queued,
        )
        left = await self.core.close(timeout_s=DRAIN_TIMEOUT_S)
        if left:
            logger.error("%d answered predictions were not written to the inference log", left)

    @bentoml.api(route="/classify")
    async def classify(
        self,
        texts: Annotated[str | list[str], Field(description="One text or a list of texts to classify.")],
    ) -> list[Prediction]:
        """Classify one text or a list of texts; the answer is a list either way. Texts from concurrent
        requests share forward passes of the model; 503 with Retry-After when the service is overloaded."""
        started = time.perf_counter()
        try:
            results = await self.core.classify(texts)
        except InvalidRequest as exc:
            raise InvalidArgument(str(exc)) from None
        except (Overloaded, LogQueueFull) as exc:
            logger.warning("%s", exc)
            return _refusal(503, str(exc), exc.retry_after_s)  # type: ignore[return-value]
        finally:
            self.hooks.request_took("/classify", time.perf_counter() - started)
        # Straight from the dataclass's attributes: no JSON walk per prediction on the request path.
        return [Prediction.model_validate(r, from_attributes=True) for r in results]

    @bentoml.api(route="/feedback")
    def feedback(
        self,
        items: Annotated[
            list[FeedbackItem],
            Field(description="Labels, each for a prediction_id or a text; all or none are stored."),
        ],
    ) -> FeedbackStored:
        """Store labels for served predictions or for texts: new labelled data for retraining."""
        started = time.perf_counter()
        plain: list[Any] = [i.model_dump(exclude_none=True) if isinstance(i, BaseModel) else i for i in items]
        try:
            records = self.core.feedback(plain)
        except InvalidFeedback as exc:
            raise _FEEDBACK_ERRORS.get(exc.status, InvalidArgument)(str(exc)) from None
        except MonitoringError as exc:
            logger.error("%s", exc)
            self.hooks.log_write_failed("/feedback")
            raise ServiceUnavailable("the inference log cannot be written") from exc
        finally:
            self.hooks.request_took("/feedback", time.perf_counter() - started)
        return FeedbackStored(stored=len(records), feedback_ids=[r.id for r in records])


Classifier.add_asgi_middleware(RequestLimits)
