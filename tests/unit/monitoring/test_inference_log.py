"""The inference log on real databases: append, recent, count, concurrent writers, prediction ids.

Tests that take ``sql_url`` run on a sqlite file and on the session's throwaway PostgreSQL server.
"""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from refinery.errors import MonitoringError
from refinery.monitoring.inference_log import COLUMNS, InferenceLog, PredictionRecord

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _record(i: int, *, when: datetime | None = None, version: str = "1") -> PredictionRecord:
    p = (i % 10) / 10
    return PredictionRecord(
        text=f"review number {i}",
        label="positive" if p >= 0.5 else "negative",
        scores={"negative": 1 - p, "positive": p},
        model_name="review-sentiment",
        model_version=version,
        timestamp=when or T0 + timedelta(seconds=i),
    )


def test_first_use_creates_folder_and_table(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "deeper" / "inference.db"
    log = InferenceLog(f"sqlite:///{db}")
    assert not db.exists(), "the constructor must not touch the database"
    assert log.count() == 0
    assert db.is_file()
    frame = log.recent(10)
    assert list(frame.columns) == list(COLUMNS)
    assert frame.empty


def test_append_recent_count_round_trip(sql_url: str) -> None:
    log = InferenceLog(sql_url)
    log.append([_record(i) for i in range(5)])
    log.append([_record(i) for i in range(5, 8)])
    log.append([])

    assert log.count() == 8
    frame = log.recent(3)
    assert list(frame.columns) == list(COLUMNS)
    assert list(frame["text"]) == ["review number 5", "review number 6", "review number 7"]
    assert frame["timestamp"].is_monotonic_increasing
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame["timestamp"].iloc[-1].to_pydatetime() == T0 + timedelta(seconds=7)
    row = frame.iloc[-1]
    assert row["scores"] == pytest.approx({"negative": 0.3, "positive": 0.7})
    assert isinstance(row["scores"], dict)
    assert (row["label"], row["model_name"], row["model_version"]) == ("positive", "review-sentiment", "1")
    assert frame["prediction_id"].is_unique
    assert all(isinstance(pid, str) and len(pid) == 32 for pid in frame["prediction_id"])
    assert len(log.recent(100)) == 8
    assert log.recent(0).empty


def test_recent_is_newest_by_timestamp_not_insertion(sql_url: str) -> None:
    log = InferenceLog(sql_url)
    log.append([_record(2), _record(0)])
    log.append([_record(1)])
    assert list(log.recent(2)["text"]) == ["review number 1", "review number 2"]


def test_timestamps_are_stored_as_utc(sql_url: str) -> None:
    log = InferenceLog(sql_url)
    cet = timezone(timedelta(hours=1))
    log.append([_record(0, when=datetime(2026, 1, 1, 13, 0, tzinfo=cet))])
    stamp = log.recent(1)["timestamp"].iloc[0].to_pydatetime()
    assert stamp == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert stamp.utcoffset() == timedelta(0)


def test_recent_keeps_the_given_prediction_ids(sql_url: str) -> None:
    log = InferenceLog(sql_url)
    records = [_record(i) for i in range(3)]
    log.append(records)
    assert list(log.recent(3)["prediction_id"]) == [r.prediction_id for r in records]


def test_a_prediction_id_is_stored_once(sql_url: str) -> None:
    log = InferenceLog(sql_url)
    first = _record(0)
    log.append([first])
    # Appending is idempotent by id (the serving writer may retry a batch whose commit it never heard
    # back from): a row with a stored id is skipped, the stored row is kept.
    log.append([PredictionRecord("other", "negative", {"negative": 1.0}, "m", "1", T0, first.prediction_id)])
    log.append([first])
    assert log.count() == 1
    assert list(log.recent(5)["text"]) == [first.text]


def test_recent_filtered_to_one_model_version(sql_url: str) -> None:
    log = InferenceLog(sql_url)
    # Interleaved in time: a newer version's predictions must not crowd the window of the one asked for.
    log.append([_record(i, version="1" if i % 3 == 0 else "2") for i in range(12)])

    frame = log.recent(3, model_version="1")
    assert list(frame["text"]) == ["review number 3", "review number 6", "review number 9"]
    assert set(frame["model_version"]) == {"1"}
    assert len(log.recent(100, model_version="2")) == 8
    assert log.recent(10, model_version="9").empty
    assert list(log.recent(2)["text"]) == ["review number 10", "review number 11"]


def test_a_table_from_before_prediction_ids_gains_the_column(sql_url: str) -> None:
    # The predictions table as earlier releases created it: no prediction_id column.
    old = sa.MetaData()
    table = sa.Table(
        "predictions",
        old,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),
    )
    engine = sa.create_engine(sql_url)
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "timestamp": T0,
                    "model_name": "m",
                    "model_version": "1",
                    "text": "old",
                    "label": "negative",
                    "scores": {"negative": 1.0},
                }
            ],
        )
    engine.dispose()

    log = InferenceLog(sql_url)
    log.append([_record(1), _record(2)])
    frame = log.recent(10)
    assert list(frame["text"]) == ["old", "review number 1", "review number 2"]
    assert frame["prediction_id"].iloc[0] is None
    assert frame["prediction_id"].iloc[1:].notna().all()
    # The unique index came along: a second InferenceLog finds everything in place.
    InferenceLog(sql_url).append([_record(3)])
    log.append([PredictionRecord("x", "negative", {}, "m", "1", T0, _record(9).prediction_id)] * 2)
    assert log.count() == 5, "the unique index keeps one row per prediction id"


def test_default_timestamp_is_now_utc() -> None:
    record = PredictionRecord("t", "positive", {"positive": 1.0}, "m", "1")
    assert record.timestamp.tzinfo is not None
    assert abs(datetime.now(UTC) - record.timestamp) < timedelta(seconds=5)
    other = PredictionRecord("t", "positive", {"positive": 1.0}, "m", "1")
    assert len(record.prediction_id) == 32 and int(record.prediction_id, 16) >= 0
    assert record.prediction_id != other.prediction_id


def test_negative_n_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must not be negative"):
        InferenceLog(f"sqlite:///{tmp_path / 'log.db'}").recent(-1)


def test_malformed_url_names_it() -> None:
    with pytest.raises(MonitoringError, match="not-a-url"):
        InferenceLog("not-a-url")


def test_unwritable_location_raises_monitoring_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    log = InferenceLog(f"sqlite:///{blocker / 'log.db'}")
    with pytest.raises(MonitoringError, match=r"log\.db"):
        log.append([_record(0)])


def test_password_is_masked_in_messages() -> None:
    log = InferenceLog("postgresql://refinery:s3cret@db.invalid/inference")
    assert "s3cret" not in log.url
    assert "s3cret" not in repr(log)


def _append_many(url: str, worker: int, batches: int, per_batch: int, start: object) -> None:
    log = InferenceLog(url)
    start.wait(timeout=30)  # type: ignore[attr-defined]  # both writers begin together
    for b in range(batches):
        log.append(
            [_record(worker * 10_000 + b * per_batch + i, version=str(worker)) for i in range(per_batch)]
        )


def test_two_processes_append_concurrently(sql_url: str) -> None:
    # Neither writer finds the table: both create it at once, then append.
    url = sql_url
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    workers = [ctx.Process(target=_append_many, args=(url, w, 40, 5, start)) for w in (1, 2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=60)
        assert p.exitcode == 0, f"writer process exited with {p.exitcode}"

    log = InferenceLog(url)
    assert log.count() == 2 * 40 * 5
    frame = log.recent(1000)
    assert frame["model_version"].value_counts().to_dict() == {"1": 200, "2": 200}
    assert frame["text"].is_unique
