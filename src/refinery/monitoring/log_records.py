"""What the inference log stores and what it accepts: its records, and the checks of a client's input.

:class:`PredictionRecord` and :class:`FeedbackRecord` are the rows of the log's two tables
(:mod:`refinery.monitoring.inference_log` is the store). :func:`text_problem` is the one rule for a
text a client sends (to /classify and /feedback); :func:`check_feedback_items` holds the checks of a
feedback request that need no database, each failure an :class:`InvalidFeedback` naming the item.

The service imports this module through the inference log: it depends on nothing but
:mod:`refinery.errors`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from refinery.errors import RefineryError

FEEDBACK_FIELDS = ("prediction_id", "text", "label")
_SHOWN_VALUE_CHARS = 64


def text_problem(value: object, where: str, max_text_chars: int) -> str | None:
    """What is wrong with a text a client sent (``where`` names it in the message), or None: one rule for
    the texts of /classify and /feedback."""
    if not isinstance(value, str):
        return f"{where} is {type(value).__name__}, expected a string"
    if not value.strip():
        return f"{where} is blank; send non-empty text"
    if len(value) > max_text_chars:
        return f"{where} has {len(value)} characters; the limit is {max_text_chars} (serving.max_text_chars)"
    return None


class InvalidFeedback(RefineryError):
    """A feedback request is malformed, names an unknown prediction, or labels a text twice.

    Nothing of the request was stored. The message names the item index and what is wrong.

    Attributes:
        status: The HTTP status that fits: 400 malformed (or an undeclared label), 404 unknown prediction
            id, 409 a text labelled twice.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def utc_now() -> datetime:
    return datetime.now(UTC)


def _new_prediction_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class PredictionRecord:
    """One served prediction; ``prediction_id`` is a fresh uuid4 hex unless given."""

    text: str
    label: str
    scores: dict[str, float]
    model_name: str
    model_version: str
    timestamp: datetime = field(default_factory=utc_now)
    prediction_id: str = field(default_factory=_new_prediction_id)


@dataclass(frozen=True)
class FeedbackRecord:
    """One stored label.

    Attributes:
        id: Order of arrival (autoincrement); the watermark of :meth:`InferenceLog.feedback_watermark`.
        timestamp: When it was stored (UTC).
        text: The labelled text (for feedback by id, the prediction's text).
        label: The label the user gave.
        prediction_id: The linked prediction: the one named, or for feedback by text the newest
            prediction of exactly that text; None when the text was never served.
        model_version: Version of the model that made the linked prediction.
        predicted_label: What that model answered.
    """

    id: int
    timestamp: datetime
    text: str
    label: str
    prediction_id: str | None
    model_version: str | None
    predicted_label: str | None


def text_sha256(text: str) -> str:
    """Hex SHA-256 of the exact text (UTF-8): the key that allows one label per text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shown(value: str) -> str:
    """A client's value as a message quotes it: ``repr``, cut at 64 characters."""
    return repr(value if len(value) <= _SHOWN_VALUE_CHARS else value[:_SHOWN_VALUE_CHARS] + "...")


@dataclass(frozen=True)
class FeedbackItem:
    """One feedback item after the checks that need no database: a label, and a prediction id or a text."""

    index: int
    label: str
    prediction_id: str | None
    text: str | None


def check_feedback_items(
    items: object, labels: Sequence[str], max_text_chars: int, max_items: int | None
) -> list[FeedbackItem]:
    """The checks of :meth:`~refinery.monitoring.inference_log.InferenceLog.add_feedback` that need no
    database (all 400).

    Raises:
        InvalidFeedback: ``items`` is not a non-empty list within ``max_items``, or an item is wrong (see
            :func:`_check_item`); the message names the item.
    """
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise InvalidFeedback(f"items must be a list of objects, got {type(items).__name__}")
    if not items:
        raise InvalidFeedback("items is an empty list; send at least one item")
    if max_items is not None and len(items) > max_items:
        raise InvalidFeedback(
            f"items has {len(items)} items; at most {max_items} are accepted per request "
            "(serving.max_batch_items)"
        )
    return [_check_item(i, item, labels, max_text_chars) for i, item in enumerate(items)]


def _check_item(i: int, item: object, labels: Sequence[str], max_text_chars: int) -> FeedbackItem:
    """One item: an object of known fields, exactly one of prediction_id and text, a declared label."""
    where = f"items[{i}]"
    if not isinstance(item, Mapping):
        raise InvalidFeedback(
            f"{where} is {type(item).__name__}, expected an object with label and one of "
            "prediction_id or text"
        )
    unknown = sorted(str(key) for key in item if key not in FEEDBACK_FIELDS)
    if unknown:
        raise InvalidFeedback(
            f"{where} has unknown field(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(FEEDBACK_FIELDS)}"
        )
    prediction_id, text = item.get("prediction_id"), item.get("text")
    if (prediction_id is None) == (text is None):
        which = "neither prediction_id nor text" if prediction_id is None else "both prediction_id and text"
        raise InvalidFeedback(f"{where} has {which}; give exactly one of them")
    label = _check_label(where, item.get("label"), labels)
    if prediction_id is not None:
        if not isinstance(prediction_id, str):
            raise InvalidFeedback(
                f"{where}.prediction_id is {type(prediction_id).__name__}, expected a string"
            )
        if not prediction_id.strip():
            raise InvalidFeedback(f"{where}.prediction_id is blank")
        return FeedbackItem(i, label, prediction_id, None)
    problem = text_problem(text, f"{where}.text", max_text_chars)
    if problem:
        raise InvalidFeedback(problem)
    return FeedbackItem(i, label, None, text)


def _check_label(where: str, label: object, labels: Sequence[str]) -> str:
    declared = ", ".join(labels)
    if label is None:
        raise InvalidFeedback(f"{where}.label is missing; expected one of: {declared}")
    if not isinstance(label, str):
        raise InvalidFeedback(f"{where}.label is {type(label).__name__}, expected a string")
    if label not in labels:
        raise InvalidFeedback(
            f"{where}.label {shown(label)} is not a label of the served model; expected one of: {declared}"
        )
    return label
