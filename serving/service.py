"""The BentoML service: POST /classify over a model packaged by the pipeline's package step.

A thin shell over :class:`refinery.serving.ClassificationService`. Which model it serves is a Bento
argument, ``model_tag``, given at build time by :func:`refinery.packaging.bento.package`; BentoML records
it (and the model) in the Bento, so ``bentoml serve <bento_tag>`` serves exactly the packaged model.
Settings (inference log URL, limits) are read from the environment once, at startup.
Health and metrics endpoints (/livez, /readyz, /metrics) come from BentoML.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import bentoml
from bentoml.exceptions import InvalidArgument, ServiceUnavailable
from pydantic import BaseModel, Field

from refinery.errors import MonitoringError
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


ARGUMENTS = bentoml.use_arguments(BuildArguments)


@bentoml.service(name="refinery-classifier", workers=1, traffic={"timeout": 60})
class Classifier:
    """Text classification with every prediction appended to the inference log."""

    model = bentoml.models.BentoModel(ARGUMENTS.model_tag)

    def __init__(self) -> None:
        stored = self.model
        self.core = ClassificationService.from_packaged_model(
            Path(stored.path), stored.info.labels, stored.info.metadata, ServiceSettings.from_env(os.environ)
        )
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
            raise ServiceUnavailable("the inference log cannot be written") from exc
        return [Prediction(**r.to_dict()) for r in results]
