"""The inference log written in batches, off the request path.

A request reserves room for its rows before the model runs (:meth:`LogWriter.reserve`), so that a
prediction is answered only when its row is sure to be queued; a full queue refuses the request with
:class:`LogQueueFull` (the service answers 503 with Retry-After): back-pressure, never a silent drop.
One thread writes the queued rows in batches of up to ``batch_rows``, each in one transaction. A batch
that fails stays at the head of the queue and is written again (with a growing pause) until it lands;
rows are inserted idempotently by prediction id, so a retry after a lost commit acknowledgement cannot
duplicate them. :meth:`LogWriter.close` (the service's shutdown hook) drains the queue.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence

from refinery.errors import MonitoringError, RefineryError
from refinery.monitoring.inference_log import InferenceLog, PredictionRecord

logger = logging.getLogger(__name__)

_FIRST_PAUSE_S = 0.1
_LONGEST_PAUSE_S = 5.0


class LogQueueFull(RefineryError):
    """The inference log's queue has no room; the client should retry after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LogWriter:
    """A bounded queue of prediction rows and the thread that writes them to an :class:`InferenceLog`."""

    def __init__(
        self,
        log: InferenceLog,
        *,
        capacity: int,
        batch_rows: int = 500,
        retry_after_s: int = 1,
        on_failure: Callable[[MonitoringError], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        """Start the writer thread.

        Args:
            log: Where the rows go.
            capacity: Most rows queued or reserved at once.
            batch_rows: Most rows per transaction.
            retry_after_s: The wait a :class:`LogQueueFull` refusal suggests.
            on_failure: Called with each failed write (the rows stay queued).
            on_depth: Called with the number of queued rows whenever it changes.

        Raises:
            ValueError: A size is not positive.
        """
        if capacity < 1 or batch_rows < 1:
            raise ValueError(f"capacity ({capacity}) and batch_rows ({batch_rows}) must be >= 1")
        self.log = log
        self.capacity = capacity
        self.batch_rows = batch_rows
        self.retry_after_s = retry_after_s
        self._on_failure = on_failure
        self._on_depth = on_depth
        self._rows: deque[PredictionRecord] = deque()
        self._reserved = 0
        self._queued_total = 0
        self._written_total = 0
        self._closing = False
        self._abandoned = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="refinery-inference-log", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Rows waiting to be written."""
        with self._changed:
            return len(self._rows)

    @property
    def written(self) -> int:
        """Rows written since the writer started."""
        with self._changed:
            return self._written_total

    def reserve(self, n: int) -> None:
        """Hold room for ``n`` rows; :meth:`put` them or :meth:`release` the room.

        Raises:
            LogQueueFull: Fewer than ``n`` places are free (nothing is held).
            RuntimeError: The writer is closing.
        """
        with self._changed:
            if self._closing:
                raise RuntimeError("the inference-log writer is closing")
            if len(self._rows) + self._reserved + n > self.capacity:
                raise LogQueueFull(
                    f"the inference log is {len(self._rows)} rows behind (at most {self.capacity},"
                    f" serving.log_queue_rows): it cannot keep up or cannot be written; retry after"
                    f" {self.retry_after_s} s",
                    self.retry_after_s,
                )
            self._reserved += n

    def release(self, n: int) -> None:
        """Give back room reserved for ``n`` rows that will not be written (the request failed)."""
        with self._changed:
            self._reserved -= n

    def put(self, records: Sequence[PredictionRecord]) -> None:
        """Queue rows whose room was reserved."""
        with self._changed:
            self._reserved -= len(records)
            self._rows.extend(records)
            self._queued_total += len(records)
            depth = len(self._rows)
            self._changed.notify_all()
        if self._on_depth is not None:
            self._on_depth(depth)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every row queued before this call is written; False when ``timeout_s`` passed first."""
        with self._changed:
            target = self._queued_total
            return self._changed.wait_for(lambda: self._written_total >= target, timeout_s)

    def close(self, timeout_s: float) -> int:
        """Refuse new rows, write the queued ones, and stop the thread.

        Returns:
            How many rows were still unwritten after ``timeout_s`` (0 when drained).
        """
        with self._changed:
            self._closing = True
            queued = len(self._rows)
            self._changed.notify_all()
        logger.info("inference log %s: writing %d queued predictions before shutdown", self.log.url, queued)
        self._thread.join(timeout_s)
        with self._changed:
            left = len(self._rows)
            self._abandoned = True  # the thread stops at its next failure instead of retrying forever
        if left:
            logger.error(
                "inference log %s: %d predictions were not written before shutdown", self.log.url, left
            )
        else:
            logger.info("inference log %s: drained, %d predictions written", self.log.url, self.written)
        return left

    def _run(self) -> None:
        pause = _FIRST_PAUSE_S
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._rows) or self._closing)
                if not self._rows:
                    return
                batch = [self._rows[i] for i in range(min(self.batch_rows, len(self._rows)))]
            try:
                self.log.append(batch)
            except MonitoringError as exc:
                logger.error(
                    "inference log: %d rows not written yet (%s); again in %.1f s", len(batch), exc, pause
                )
                if self._on_failure is not None:
                    self._on_failure(exc)
                with self._changed:
                    if self._abandoned:
                        return
                    self._changed.wait(pause)  # woken early only by close(); the rows are still owed
                pause = min(pause * 2, _LONGEST_PAUSE_S)
                continue
            pause = _FIRST_PAUSE_S
            with self._changed:
                for _ in batch:
                    self._rows.popleft()
                self._written_total += len(batch)
                depth = len(self._rows)
                self._changed.notify_all()
            if self._on_depth is not None:
                self._on_depth(depth)
