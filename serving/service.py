"""The BentoML service: POST /classify over a model packaged by the pipeline's package step, and
POST /feedback, where users send the labels that become new training data.

A thin shell over :class:`refinery.serving.ClassificationService`. Which model it serves is a Bento
argument, ``model_tag``, given at build time by :func:`refinery.packaging.bento.package`; BentoML records
it (and the model) in the Bento, so ``bentoml serve <bento_tag>`` serves exactly the packaged model.
Settings (inference log URL, limits) are read from the environment once, at startup.
Health and metrics endpoints (/livez, /readyz, /metrics) come from BentoML.
"""

from __future__ import annotations

import logging
import os
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound, ServiceUnavailable
from pydantic import BaseModel, ConfigDict, Field

from refinery.errors import MonitoringError
from refinery.monitoring.inference_log import InvalidFeedback
from refinery.serving import ClassificationService, InvalidRequest, ServiceSettings

logger = logging.getLogger("refinery.service")


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

#: Predictions or labels the inference log refused (the request was answered 503): on /metrics beside
#: BentoML's own metrics, for the alert in k8s/components/serving-monitoring. BentoML creates it lazily.
LOG_WRITE_FAILURES = bentoml.metrics.Counter(
    name="refinery_inference_log_write_failures",
    documentation="Requests refused with 503 because the inference log could not be written.",
    labelnames=["endpoint"],
)


@bentoml.service(name="refinery-classifier", workers=1, traffic={"timeout": 60})
class Classifier:
    """Text classification with every prediction appended to the inference log."""

    model = bentoml.models.BentoModel(ARGUMENTS.model_tag)

    def __init__(self) -> None:
        stored = self.model
        self.core = ClassificationService.from_packaged_model(
            Path(stored.path), stored.info.labels, stored.info.metadata, ServiceSettings.from_env(os.environ)
        )
        for endpoint in ("/classify", "/feedback"):
            LOG_WRITE_FAILURES.labels(endpoint=endpoint)  # shown at 0 before the first failure
        logger.info(
            "serving %s version %s (labels %s), inference log %s",
            self.core.model_name,
            self.core.model_version,
            ", ".join(self.core.labels),
            self.core.log.url,
        )

    @bentoml.api(route="/classify")
    def classify(
        self,
        texts: Annotated[str | list[str], Field(description="One text or a list of texts to classify.")],
    ) -> list[Prediction]:
        """Classify one text or a list of texts; the answer is a list either way."""
        try:
            results = self.core.classify(texts)
        except InvalidRequest as exc:
            raise InvalidArgument(str(exc)) from None
        except MonitoringError as exc:
            # Serving without logging would blind drift monitoring: refuse, and say so in the log.
            logger.error("%s", exc)
            LOG_WRITE_FAILURES.labels(endpoint="/classify").inc()
            raise ServiceUnavailable("the inference log cannot be written") from exc
        return [Prediction(**r.to_dict()) for r in results]

    @bentoml.api(route="/feedback")
    def feedback(
        self,
        items: Annotated[
            list[FeedbackItem],
            Field(description="Labels, each for a prediction_id or a text; all or none are stored."),
        ],
    ) -> FeedbackStored:
        """Store labels for served predictions or for texts: new labelled data for retraining."""
        plain: list[Any] = [i.model_dump(exclude_none=True) if isinstance(i, BaseModel) else i for i in items]
        try:
            records = self.core.feedback(plain)
        except InvalidFeedback as exc:
            raise _FEEDBACK_ERRORS.get(exc.status, InvalidArgument)(str(exc)) from None
        except MonitoringError as exc:
            logger.error("%s", exc)
            LOG_WRITE_FAILURES.labels(endpoint="/feedback").inc()
            raise ServiceUnavailable("the inference log cannot be written") from exc
        return FeedbackStored(stored=len(records), feedback_ids=[r.id for r in records])
