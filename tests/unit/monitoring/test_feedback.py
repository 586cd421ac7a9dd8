"""Feedback in the inference log: labels by prediction id or by text, all-or-nothing, one label per text.

Every test runs on a sqlite file and on the session's throwaway PostgreSQL server (``sql_url``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from refinery.monitoring.inference_log import (
    FEEDBACK_COLUMNS,
    InferenceLog,
    InvalidFeedback,
    PredictionRecord,
    text_sha256,
)

LABELS = ("negative", "positive")
MAX_TEXT_CHARS = 50
MAX_ITEMS = 5
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _prediction(text: str, version: str, label: str = "positive", seconds: int = 0) -> PredictionRecord:
    other = "negative" if label == "positive" else "positive"
    return PredictionRecord(
        text=text,
        label=label,
        scores={label: 0.8, other: 0.2},
        model_name="review-sentiment",
        model_version=version,
        timestamp=T0 + timedelta(seconds=seconds),
    )


@dataclass(frozen=True)
class Logged:
    """A log holding predictions of two model versions and one label already given."""

    log: InferenceLog
    url: str
    v1: PredictionRecord  # "works well", version 1, answered positive
    v2: PredictionRecord  # "works well" again, later, version 2, answered negative
    other: PredictionRecord  # "too loud", version 2
    labelled: PredictionRecord  # "already labelled", version 2, has feedback (negative)


@pytest.fixture
def logged(sql_url: str) -> Logged:
    log = InferenceLog(sql_url)
    v1 = _prediction("works well", "1", "positive", seconds=1)
    v2 = _prediction("works well", "2", "negative", seconds=5)
    other = _prediction("too loud", "2", "positive", seconds=3)
    labelled = _prediction("already labelled", "2", "positive", seconds=4)
    log.append([v1, v2, other, labelled])
    log.add_feedback([{"prediction_id": labelled.prediction_id, "label": "negative"}], LABELS, MAX_TEXT_CHARS)
    return Logged(log, sql_url, v1, v2, other, labelled)


def _add(log: InferenceLog, items: object) -> list[Any]:
    return log.add_feedback(items, LABELS, MAX_TEXT_CHARS, max_items=MAX_ITEMS)


def test_feedback_by_id_takes_the_text_version_and_answer_of_that_prediction(logged: Logged) -> None:
    log = logged.log
    before = log.feedback_watermark()
    (record,) = _add(log, [{"prediction_id": logged.v1.prediction_id, "label": "negative"}])

    assert record.id == before + 1
    assert (record.text, record.label) == ("works well", "negative")
    assert (record.prediction_id, record.model_version, record.predicted_label) == (
        logged.v1.prediction_id,
        "1",
        "positive",
    )
    assert record.timestamp.tzinfo is not None
    assert abs(datetime.now(UTC) - record.timestamp) < timedelta(seconds=30)
    row = log.feedback_rows().iloc[-1]
    assert (row["id"], row["text"], row["label"], row["prediction_id"]) == (
        record.id,
        "works well",
        "negative",
        logged.v1.prediction_id,
    )
    assert (row["model_version"], row["predicted_label"]) == ("1", "positive")


def test_feedback_by_text_links_the_newest_prediction_of_exactly_that_text(logged: Logged) -> None:
    records = _add(
        logged.log,
        [
            {"text": "works well", "label": "positive"},
            {"text": "never classified", "label": "negative"},
            {"text": "Too loud", "label": "negative"},  # not "too loud": texts match exactly
        ],
    )

    linked, unlinked, other_case = records
    assert [r.id for r in records] == sorted(r.id for r in records)
    assert (linked.prediction_id, linked.model_version, linked.predicted_label) == (
        logged.v2.prediction_id,
        "2",
        "negative",
    )
    for record in (unlinked, other_case):
        assert (record.prediction_id, record.model_version, record.predicted_label) == (None, None, None)
    assert list(logged.log.feedback_rows()["text"]) == [
        "already labelled",
        "works well",
        "never classified",
        "Too loud",
    ]


BAD_REQUESTS: list[Any] = [
    # (items, given the fixture; status; what the message says)
    pytest.param(lambda f: [], 400, "items is an empty list", id="empty"),
    pytest.param(lambda f: {"text": "a", "label": "positive"}, 400, "items must be a list", id="not-a-list"),
    pytest.param(lambda f: "a text", 400, "items must be a list of objects, got str", id="a-string"),
    pytest.param(
        lambda f: [{"text": f"t{i}", "label": "positive"} for i in range(MAX_ITEMS + 1)],
        400,
        f"items has {MAX_ITEMS + 1} items; at most {MAX_ITEMS} are accepted per request",
        id="too-many",
    ),
    pytest.param(
        lambda f: [{"text": "fine", "label": "positive"}, {"prediction_id": "0" * 32, "label": "positive"}],
        404,
        f"items[1].prediction_id '{'0' * 32}' is not a prediction in the inference log",
        id="unknown-id",
    ),
    pytest.param(
        lambda f: [{"text": "fine", "label": "positive"}, {"text": "meh", "label": "neutral"}],
        400,
        "items[1].label 'neutral' is not a label of the served model; expected one of: negative, positive",
        id="undeclared-label",
    ),
    pytest.param(
        lambda f: [{"text": "fine", "label": "positive"}, {"text": "meh", "label": "Positive"}],
        400,
        "items[1].label 'Positive' is not a label",
        id="label-case",
    ),
    pytest.param(
        lambda f: [{"text": "fine", "label": "positive"}, {"text": "meh", "label": 1}],
        400,
        "items[1].label is int, expected a string",
        id="label-number",
    ),
    pytest.param(
        lambda f: [{"text": "fine", "label": "positive"}, {"text": "meh"}],
        400,
        "items[1].label is missing",
        id="label-missing",
    ),
    pytest.param(
        lambda f: [
            {"text": "fine", "label": "positive"},
            {"prediction_id": f.other.prediction_id, "text": "too loud", "label": "negative"},
        ],
        400,
        "items[1] has both prediction_id and text; give exactly one of them",
        id="both-id-and-text",
    ),
    pytest.param(
        lambda f: [{"text": "fine", "label": "positive"}, {"label": "negative"}],
        400,
        "items[1] has neither prediction_id nor text; give exactly one of them",
        id="neither-id-nor-text",
    ),
    pytest.param(
        lambda f: [{"text": "fine", "label": "positive"}, {"text": "  \n", "label": "negative"}],
        400,
        "items[1].text is blank",
        id="blank-text",
    ),
    pytest.param(
        lambda f: [
            {"text": "fine", "label": "positive"},
            {"text": "x" * (MAX_TEXT_CHARS + 1), "label": "negative"},
        ],
        400,
        f"items[1].text has {MAX_TEXT_CHARS + 1} characters; the limit is {MAX_TEXT_CHARS}",
        id="text-too-long",
    ),
    pytest.param(
        lambda f: [{"text": "fine", "label": "positive"}, {"text": ["a"], "label": "negative"}],
        400,
        "items[1].text is list, expected a string",
        id="text-not-a-string",
    ),
    pytest.param(
        lambda f: [{"text": "fine", "label": "positive"}, {"prediction_id": "", "label": "negative"}],
        400,
        "items[1].prediction_id is blank",
        id="blank-id",
    ),
    pytest.param(
        lambda f: [{"text": "fine", "label": "positive"}, "negative"],
        400,
        "items[1] is str, expected an object",
        id="item-not-an-object",
    ),
    pytest.param(
        lambda f: [{"text": "fine", "label": "positive"}, {"text": "meh", "label": "negative", "lable": "x"}],
        400,
        "items[1] has unknown field(s) 'lable'",
        id="unknown-field",
    ),
    pytest.param(
        lambda f: [
            {"text": "fine", "label": "positive"},
            {"text": "twice", "label": "positive"},
            {"text": "twice", "label": "negative"},
        ],
        409,
        "items[2] labels the same text as items[1]; a text gets one label at most",
        id="same-text-twice-in-request",
    ),
    pytest.param(
        lambda f: [
            {"prediction_id": f.other.prediction_id, "label": "positive"},
            {"text": "too loud", "label": "positive"},
        ],
        409,
        "items[1] labels the same text as items[0]",
        id="id-and-its-text-in-request",
    ),
    pytest.param(
        lambda f: [
            {"prediction_id": f.v1.prediction_id, "label": "positive"},
            {"prediction_id": f.v2.prediction_id, "label": "positive"},
        ],
        409,
        "items[1] labels the same text as items[0]",
        id="two-predictions-of-one-text",
    ),
    pytest.param(
        lambda f: [{"text": "fine", "label": "positive"}, {"text": "already labelled", "label": "positive"}],
        409,
        "items[1]: the text already has feedback (id 1, label 'negative'); a text gets one label at most",
        id="text-labelled-in-store",
    ),
    pytest.param(
        lambda f: [
            {"text": "fine", "label": "positive"},
            {"prediction_id": f.labelled.prediction_id, "label": "positive"},
        ],
        409,
        "items[1]: the text already has feedback (id 1",
        id="prediction-labelled-in-store",
    ),
]


@pytest.mark.parametrize(("items", "status", "message"), BAD_REQUESTS)
def test_a_bad_request_is_refused_whole_with_the_reason(
    logged: Logged, items: Callable[[Logged], object], status: int, message: str
) -> None:
    log = logged.log
    before = (log.count_feedback(), log.feedback_rows())

    with pytest.raises(InvalidFeedback) as refused:
        _add(log, items(logged))

    assert refused.value.status == status
    assert message in str(refused.value)
    assert log.count_feedback() == before[0]
    pd.testing.assert_frame_equal(log.feedback_rows(), before[1])
    # The valid items of the refused request can still be stored afterwards.
    assert len(_add(log, [{"text": "fine", "label": "positive"}])) == 1


def test_a_race_on_the_same_text_is_a_conflict_and_stores_nothing(logged: Logged) -> None:
    # Another request stores feedback on "contested" after this one checked the store and before it
    # inserts; the UNIQUE text_sha256 stops the second label, and the request's first row rolls back.
    log, rival = logged.log, InferenceLog(logged.url)
    engine = log._connect()
    fired: list[str] = []

    def rival_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not fired and statement.lstrip().upper().startswith("INSERT INTO FEEDBACK"):
            fired.append(statement)
            rival.add_feedback([{"text": "contested", "label": "negative"}], LABELS, MAX_TEXT_CHARS)

    sa.event.listen(engine, "before_cursor_execute", rival_first)
    try:
        with pytest.raises(InvalidFeedback, match="another request labelled one of these texts") as refused:
            _add(
                log,
                [{"text": "first of mine", "label": "positive"}, {"text": "contested", "label": "positive"}],
            )
    finally:
        sa.event.remove(engine, "before_cursor_execute", rival_first)
        rival.close()

    assert fired, "the rival insert never ran: the test did not test the race"
    assert refused.value.status == 409
    rows = log.feedback_rows()
    assert list(rows["text"]) == ["already labelled", "contested"]
    assert list(rows["label"]) == ["negative", "negative"]


def test_watermark_rows_through_and_counts(logged: Logged) -> None:
    log = logged.log
    mark = log.feedback_watermark()
    assert mark == 1
    _add(log, [{"text": "a", "label": "positive"}, {"text": "b", "label": "negative"}])
    _add(log, [{"text": "c", "label": "positive"}])

    assert log.feedback_watermark() == 4
    assert log.count_feedback() == 4
    assert log.count_feedback(after_id=mark) == 3
    assert log.count_feedback(after_id=4) == 0
    assert list(log.feedback_rows(through_id=3)["text"]) == ["already labelled", "a", "b"]
    assert log.feedback_rows(through_id=0).empty

    frame = log.feedback_rows()
    assert list(frame.columns) == list(FEEDBACK_COLUMNS)
    assert list(frame["id"]) == [1, 2, 3, 4]
    assert frame["timestamp"].is_monotonic_increasing
    assert str(frame["timestamp"].dt.tz) == "UTC"


def test_an_empty_log_has_watermark_zero(sql_url: str) -> None:
    log = InferenceLog(sql_url)
    assert log.feedback_watermark() == 0
    assert log.count_feedback() == 0
    frame = log.feedback_rows()
    assert list(frame.columns) == list(FEEDBACK_COLUMNS)
    assert frame.empty
    assert list(log.feedback_for(["x"]).columns) == ["prediction_id", "label"]
    assert log.feedback_for([]).empty


def test_feedback_for_a_long_list_of_prediction_ids(logged: Logged) -> None:
    log = logged.log
    many = [_prediction(f"review {i}", "2", seconds=10 + i) for i in range(1200)]
    log.append(many)
    labelled = many[::300]  # 4 of them, spread over the IN chunks
    _add(log, [{"prediction_id": p.prediction_id, "label": "negative"} for p in labelled])
    _add(log, [{"text": "too loud", "label": "negative"}])  # by text, linked to logged.other

    wanted = [p.prediction_id for p in many] + [logged.other.prediction_id, "no-such-id"]
    frame = log.feedback_for(wanted)
    assert list(frame.columns) == ["prediction_id", "label"]
    assert dict(zip(frame["prediction_id"], frame["label"], strict=True)) == {
        **{p.prediction_id: "negative" for p in labelled},
        logged.other.prediction_id: "negative",
    }


def test_the_feedback_table_keys_texts_by_their_sha256(logged: Logged) -> None:
    engine = sa.create_engine(logged.url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT text, text_sha256 FROM feedback")).all()
    finally:
        engine.dispose()
    assert stored
    assert all(digest == hashlib.sha256(text.encode("utf-8")).hexdigest() for text, digest in stored)
    assert text_sha256("already labelled") == hashlib.sha256(b"already labelled").hexdigest()
