"""The inference-log writer: rows written in batches off the request path, back-pressure, drained on close."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from refinery.errors import MonitoringError
from refinery.monitoring.inference_log import InferenceLog, PredictionRecord
from refinery.serving.log_writer import LogQueueFull, LogWriter


def _records(n: int, prefix: str = "t") -> list[PredictionRecord]:
    return [
        PredictionRecord(
            text=f"{prefix}{i}", label="positive", scores={"positive": 1.0}, model_name="m", model_version="1"
        )
        for i in range(n)
    ]


class GatedLog(InferenceLog):
    """A real sqlite inference log whose writes wait for ``open`` and can be made to fail."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.open = threading.Event()
        self.failing = False
        self.batches: list[int] = []

    def append(self, records: object) -> None:
        self.open.wait(30)
        if self.failing:
            raise MonitoringError("cannot append: the database is down")
        super().append(records)  # type: ignore[arg-type]
        self.batches.append(len(records))  # type: ignore[arg-type]


def test_rows_are_written_in_batches_and_drained_on_close(tmp_path: Path) -> None:
    log = GatedLog(f"sqlite:///{tmp_path / 'log.db'}")
    depths: list[int] = []
    writer = LogWriter(log, capacity=1000, batch_rows=40, on_depth=depths.append)
    for chunk in range(10):
        writer.reserve(10)
        writer.put(_records(10, prefix=f"c{chunk}-"))
    assert writer.queued == 100
    log.open.set()

    assert writer.close(timeout_s=30) == 0
    assert log.count() == 100
    assert max(log.batches) <= 40
    assert len(log.batches) >= 3
    assert depths[-1] == 0
    assert sorted(log.recent(100)["text"]) == sorted(f"c{c}-{i}" for c in range(10) for i in range(10))


def test_a_full_queue_refuses_and_a_released_reservation_frees_room(tmp_path: Path) -> None:
    log = GatedLog(f"sqlite:///{tmp_path / 'log.db'}")
    writer = LogWriter(log, capacity=5, retry_after_s=3)
    writer.reserve(3)
    writer.put(_records(3))
    writer.reserve(2)
    with pytest.raises(LogQueueFull, match=r"3 rows behind \(at most 5, serving.log_queue_rows\)") as full:
        writer.reserve(1)
    assert full.value.retry_after_s == 3
    writer.release(2)  # the request failed before its rows were made
    writer.reserve(2)
    writer.put(_records(2, prefix="u"))
    log.open.set()
    assert writer.flush(timeout_s=30)
    assert log.count() == 5
    writer.close(timeout_s=5)


def test_failed_writes_are_retried_and_counted_never_dropped(tmp_path: Path) -> None:
    log = GatedLog(f"sqlite:///{tmp_path / 'log.db'}")
    failures: list[MonitoringError] = []
    writer = LogWriter(log, capacity=100, on_failure=failures.append)
    log.failing = True
    log.open.set()
    writer.reserve(4)
    writer.put(_records(4))
    assert not writer.flush(timeout_s=0.5)
    assert failures and "database is down" in str(failures[0])
    assert writer.queued == 4

    log.failing = False  # the database is back: the same rows land, once
    assert writer.flush(timeout_s=30)
    assert log.count() == 4
    assert writer.close(timeout_s=5) == 0


def test_close_reports_rows_it_could_not_write(tmp_path: Path) -> None:
    log = GatedLog(f"sqlite:///{tmp_path / 'log.db'}")
    log.failing = True
    log.open.set()
    writer = LogWriter(log, capacity=10)
    writer.reserve(2)
    writer.put(_records(2))
    assert writer.close(timeout_s=0.5) == 2
    with pytest.raises(RuntimeError, match="closing"):
        writer.reserve(1)


def test_appending_the_same_rows_twice_stores_them_once(tmp_path: Path) -> None:
    # A retry after a commit whose acknowledgement was lost must not duplicate predictions.
    log = InferenceLog(f"sqlite:///{tmp_path / 'log.db'}")
    rows = _records(3)
    log.append(rows)
    log.append(rows)
    assert log.count() == 3
