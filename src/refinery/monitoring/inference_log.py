"""The inference log: every prediction the service makes, and the labels users send back about them.

Two tables behind one SQLAlchemy URL: a sqlite file in the embedded deployment, PostgreSQL on a cluster.

- ``predictions``: one row per served prediction, the input of drift monitoring. Each has a
  ``prediction_id`` (uuid4 hex) the service returns with the answer.
- ``feedback``: labels sent to the service's ``/feedback`` API, each naming a prediction by id or a text;
  new labelled data for retraining. Its ``id`` orders arrivals, so a reader remembers a watermark and
  later reads only what came after it. A text gets one label at most (``text_sha256`` is unique).

Several service workers append at once, so sqlite runs in WAL mode with a busy timeout, and a write that
still meets a locked database is retried a few times. Tables are created on first use; a ``predictions``
table made before prediction ids existed gains the column and its unique index then (its old rows keep
no id).

The records and the checks of a client's input that need no database are in
:mod:`refinery.monitoring.log_records`; they are importable from here too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from refinery.db import create_engine, create_tables, is_sqlite_locked, mask_url, parse_url
from refinery.errors import MonitoringError
from refinery.monitoring.log_records import (
    FEEDBACK_FIELDS,
    FeedbackItem,
    FeedbackRecord,
    InvalidFeedback,
    PredictionRecord,
    check_feedback_items,
    shown,
    text_problem,
    text_sha256,
    utc_now,
)

if TYPE_CHECKING:
    import pandas as pd

# The records, the checks and their error live in log_records; callers (the service among them) import
# them from here, beside the store.
__all__ = [
    "COLUMNS",
    "FEEDBACK_COLUMNS",
    "FEEDBACK_FIELDS",
    "FeedbackRecord",
    "InferenceLog",
    "InvalidFeedback",
    "PredictionRecord",
    "text_problem",
    "text_sha256",
]

logger = logging.getLogger(__name__)

TABLE_NAME = "predictions"
FEEDBACK_TABLE_NAME = "feedback"
COLUMNS = ("timestamp", "text", "label", "scores", "model_name", "model_version", "prediction_id")
FEEDBACK_COLUMNS = ("id", "timestamp", "text", "label", "prediction_id", "model_version", "predicted_label")

_SQLITE_BUSY_TIMEOUT_S = 30
_LOCKED_RETRIES = 5
# Values per IN (...) clause: far below sqlite's and PostgreSQL's limits on bound parameters.
_IN_CHUNK = 500

_T = TypeVar("_T")


def _as_utc(value: datetime) -> datetime:
    # sqlite keeps no offset: a naive value read back is UTC because only UTC is written.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        TABLE_NAME,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),
        # NULL only in rows of tables upgraded from before prediction ids (see _index_prediction_ids).
        sa.Column("prediction_id", sa.String(32), nullable=False, unique=True, index=True),
    )


def _feedback_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        FEEDBACK_TABLE_NAME,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prediction_id", sa.String(32), nullable=True, index=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("text_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("predicted_label", sa.String(255), nullable=True),
    )


def _chunks(values: Sequence[_T], size: int = _IN_CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _feedback_row(
    item: FeedbackItem, by_id: dict[str, Any], newest: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """The feedback row of one item, linked to its prediction (404 when the id names none)."""
    if item.prediction_id is not None:
        linked = by_id.get(item.prediction_id)
        if linked is None:
            raise InvalidFeedback(
                f"items[{item.index}].prediction_id {shown(item.prediction_id)} is not a prediction "
                "in the inference log",
                status=404,
            )
        text = str(linked.text)
    else:
        text = str(item.text)
        linked = newest.get(text)
    return {
        "timestamp": now,
        "prediction_id": linked.prediction_id if linked is not None else None,
        "text": text,
        "text_sha256": text_sha256(text),
        "label": item.label,
        "model_version": linked.model_version if linked is not None else None,
        "predicted_label": linked.label if linked is not None else None,
    }


def _check_one_label_per_text(items: list[FeedbackItem], rows: list[dict[str, Any]]) -> None:
    """Refuse (409) a request that labels one text twice."""
    first_of: dict[str, int] = {}
    for item, row in zip(items, rows, strict=True):
        earlier = first_of.setdefault(row["text_sha256"], item.index)
        if earlier != item.index:
            raise InvalidFeedback(
                f"items[{item.index}] labels the same text as items[{earlier}]; a text gets one label at most",
                status=409,
            )


class InferenceLog:
    """Append-only log of served predictions and of the feedback on them, behind a SQLAlchemy URL.

    Nothing is opened until the first call; the first call creates the tables (and, for sqlite, the
    database file's folder). Safe to use from several processes at once.
    """

    def __init__(self, url: str) -> None:
        """Point the log at a database.

        Args:
            url: SQLAlchemy URL, e.g. ``sqlite:////abs/path/inference.db`` or
                ``postgresql+psycopg://user@host/db``.

        Raises:
            MonitoringError: ``url`` is not a SQLAlchemy URL.
        """
        self._url: URL = parse_url(url, what="inference log", error=MonitoringError)
        self._metadata = sa.MetaData()
        self._table = _table(self._metadata)
        self._feedback = _feedback_table(self._metadata)
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return mask_url(self._url)

    def __repr__(self) -> str:
        return f"InferenceLog({self.url!r})"

    def _is_sqlite(self) -> bool:
        return self._url.get_backend_name() == "sqlite"

    def _connect(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = self._create_engine()
            return self._engine

    def _create_engine(self) -> Engine:
        engine = create_engine(
            self._url,
            what="inference log",
            error=MonitoringError,
            sqlite_busy_timeout_s=_SQLITE_BUSY_TIMEOUT_S,
            # WAL lets readers (the drift monitor) run while workers append.
            sqlite_wal=True,
            pre_ping=True,
        )
        create_tables(engine, self._metadata, what="inference log", error=MonitoringError)
        self._index_prediction_ids(engine)
        return engine

    def _index_prediction_ids(self, engine: Engine) -> None:
        """The unique index on ``prediction_id``, which a table from before prediction ids lacks (create_tables
        added the column; its old rows hold NULL, as no id was ever returned for them)."""
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    f"CREATE UNIQUE INDEX IF NOT EXISTS ix_{TABLE_NAME}_prediction_id "
                    f"ON {TABLE_NAME} (prediction_id)"
                )
        except SQLAlchemyError as exc:
            indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes(TABLE_NAME)}
            if f"ix_{TABLE_NAME}_prediction_id" not in indexes:
                raise MonitoringError(
                    f"inference log at {self.url}: cannot index {TABLE_NAME}.prediction_id: {exc}"
                ) from exc

    def _write(self, work: Callable[[Connection], _T], what: str) -> _T:
        """Run ``work`` in one transaction, again when sqlite reports another writer's lock.

        Errors other than SQLAlchemy's (e.g. :class:`InvalidFeedback`) roll back and pass through.
        """
        engine = self._connect()
        for attempt in range(_LOCKED_RETRIES):
            try:
                with engine.begin() as conn:
                    return work(conn)
            except OperationalError as exc:
                if not (self._is_sqlite() and is_sqlite_locked(exc)) or attempt == _LOCKED_RETRIES - 1:
                    raise MonitoringError(f"cannot {what}: {exc}") from exc
                logger.warning("inference log %s is locked; retrying (%d)", self.url, attempt + 1)
                time.sleep(0.1 * (attempt + 1))
            except SQLAlchemyError as exc:
                raise MonitoringError(f"cannot {what}: {exc}") from exc
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _read(self, work: Callable[[Connection], _T], what: str) -> _T:
        try:
            with self._connect().connect() as conn:
                return work(conn)
        except SQLAlchemyError as exc:
            raise MonitoringError(f"cannot read {what} from {self.url}: {exc}") from exc

    def append(self, records: Sequence[PredictionRecord]) -> None:
        """Write predictions in one transaction.

        Idempotent on sqlite and PostgreSQL: a row whose ``prediction_id`` is already stored is skipped,
        so writing a batch again after a commit whose acknowledgement was lost adds nothing twice.

        Raises:
            MonitoringError: The database cannot be written.
        """
        if not records:
            return
        rows = [
            {
                "timestamp": _as_utc(r.timestamp),
                "model_name": r.model_name,
                "model_version": r.model_version,
                "text": r.text,
                "label": r.label,
                "scores": {str(k): float(v) for k, v in r.scores.items()},
                "prediction_id": r.prediction_id,
            }
            for r in records
        ]
        self._write(
            lambda conn: conn.execute(self._insert_new(conn), rows),
            f"append {len(rows)} predictions to {self.url}",
        )

    def _insert_new(self, conn: Connection) -> sa.Insert:
        """An INSERT of predictions that skips prediction ids already stored, where the dialect can."""
        dialect = conn.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(self._table).on_conflict_do_nothing(index_elements=["prediction_id"])
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(self._table).on_conflict_do_nothing(index_elements=["prediction_id"])
        return self._table.insert()

    def recent(self, n: int, model_version: str | None = None) -> pd.DataFrame:
        """The newest ``n`` predictions, oldest first.

        Args:
            n: How many.
            model_version: Only predictions of this model version (e.g. the one serving now), when given.

        Returns:
            DataFrame with the columns of :data:`COLUMNS`: timestamp (UTC), text, label, scores (dict),
            model_name, model_version, prediction_id (None for rows logged before prediction ids).

        Raises:
            MonitoringError: The database cannot be read.
            ValueError: ``n`` is negative.
        """
        import pandas as pd

        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        t = self._table
        query = sa.select(t.c.id, *(t.c[name] for name in COLUMNS))
        if model_version is not None:
            query = query.where(t.c.model_version == model_version)
        query = query.order_by(t.c.timestamp.desc(), t.c.id.desc()).limit(n)
        rows = self._read(lambda conn: list(conn.execute(query).all()), "predictions")
        rows.reverse()
        return pd.DataFrame(
            {
                "timestamp": pd.to_datetime([_as_utc(r.timestamp) for r in rows], utc=True),
                "text": [r.text for r in rows],
                "label": [r.label for r in rows],
                "scores": [dict(r.scores) for r in rows],
                "model_name": [r.model_name for r in rows],
                "model_version": [r.model_version for r in rows],
                "prediction_id": pd.Series([r.prediction_id for r in rows], dtype=object),
            },
            columns=list(COLUMNS),
        )

    def count(self) -> int:
        """How many predictions the log holds.

        Raises:
            MonitoringError: The database cannot be read.
        """
        query = sa.select(sa.func.count()).select_from(self._table)
        return int(self._read(lambda conn: conn.execute(query).scalar_one(), "the prediction count"))

    def add_feedback(
        self,
        items: object,
        labels: Sequence[str],
        max_text_chars: int,
        *,
        max_items: int | None = None,
    ) -> list[FeedbackRecord]:
        """Check feedback items and store them all, in one transaction, or none.

        Each item is a mapping with ``label`` and exactly one of ``prediction_id`` (a logged prediction:
        the feedback takes its text, model version and predicted label) or ``text`` (linked to the newest
        prediction of exactly that text, if there is one). Every item is checked before anything is
        written. A text gets one label at most, in a request and in the store.

        Args:
            items: The items as the client sent them (a list of mappings).
            labels: The labels a user may give: those of the served model.
            max_text_chars: Longest text accepted, in characters.
            max_items: Most items accepted in one request; None for no limit.

        Returns:
            The stored rows, in request order.

        Raises:
            InvalidFeedback: Nothing was stored. status 400: ``items`` is not a non-empty list (within
                ``max_items``), an item is not an object, has both or neither of prediction_id and text,
                a blank or too long text, or a label that is not a string in ``labels``; 404: a
                prediction_id is not in the log; 409: a text is labelled twice in the request, already
                has feedback, or got it from another request at the same time. The message names the item.
            MonitoringError: The database cannot be read or written.
        """
        checked = check_feedback_items(items, labels, max_text_chars, max_items)
        return self._write(
            lambda conn: self._store_feedback(conn, checked),
            f"store {len(checked)} feedback items in {self.url}",
        )

    def _store_feedback(self, conn: Connection, items: list[FeedbackItem]) -> list[FeedbackRecord]:
        by_id, newest = self._linked_predictions(conn, items)
        now = utc_now()
        rows = [_feedback_row(item, by_id, newest, now) for item in items]
        _check_one_label_per_text(items, rows)
        self._check_not_labelled(conn, items, rows)
        return self._insert_feedback(conn, rows, now)

    def _linked_predictions(
        self, conn: Connection, items: list[FeedbackItem]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The predictions the items name by id, and the newest prediction of each text they send."""
        p = self._table
        by_id: dict[str, Any] = {}
        ids = sorted({item.prediction_id for item in items if item.prediction_id is not None})
        for chunk in _chunks(ids):
            query = sa.select(p.c.prediction_id, p.c.text, p.c.model_version, p.c.label).where(
                p.c.prediction_id.in_(chunk)
            )
            by_id.update({row.prediction_id: row for row in conn.execute(query)})
        newest: dict[str, Any] = {}
        texts = sorted({item.text for item in items if item.text is not None})
        for chunk in _chunks(texts):
            query = (
                sa.select(p.c.prediction_id, p.c.text, p.c.model_version, p.c.label)
                .where(p.c.text.in_(chunk))
                .order_by(p.c.timestamp, p.c.id)
            )
            newest.update({row.text: row for row in conn.execute(query)})  # the last row of a text wins
        return by_id, newest

    def _check_not_labelled(
        self, conn: Connection, items: list[FeedbackItem], rows: list[dict[str, Any]]
    ) -> None:
        """Refuse (409) an item whose text already has stored feedback."""
        f = self._feedback
        existing: dict[str, Any] = {}
        for chunk in _chunks(list(dict.fromkeys(row["text_sha256"] for row in rows))):
            query = sa.select(f.c.id, f.c.text_sha256, f.c.label).where(f.c.text_sha256.in_(chunk))
            existing.update({row.text_sha256: row for row in conn.execute(query)})
        for item, row in zip(items, rows, strict=True):
            if (stored := existing.get(row["text_sha256"])) is not None:
                raise InvalidFeedback(
                    f"items[{item.index}]: the text already has feedback (id {stored.id}, label "
                    f"{stored.label!r}); a text gets one label at most",
                    status=409,
                )

    def _insert_feedback(
        self, conn: Connection, rows: list[dict[str, Any]], now: datetime
    ) -> list[FeedbackRecord]:
        records: list[FeedbackRecord] = []
        try:
            for row in rows:
                # One insert per row for its id; a request holds at most serving.max_batch_items rows.
                key = conn.execute(self._feedback.insert().values(**row)).inserted_primary_key
                if key is None or key[0] is None:
                    raise MonitoringError(f"inference log at {self.url}: the feedback insert returned no id")
                fields = {k: v for k, v in row.items() if k != "text_sha256"}
                records.append(FeedbackRecord(id=int(key[0]), **fields))
        except IntegrityError as exc:
            # Another request stored feedback on one of these texts after the check above.
            raise InvalidFeedback(
                "another request labelled one of these texts at the same time; a text gets one label at "
                "most, and nothing of this request was stored",
                status=409,
            ) from exc
        return records

    def feedback_watermark(self) -> int:
        """The id of the newest feedback row, 0 when there is none.

        Raises:
            MonitoringError: The database cannot be read.
        """
        query = sa.select(sa.func.max(self._feedback.c.id))
        value = self._read(lambda conn: conn.execute(query).scalar_one(), "the feedback watermark")
        return int(value or 0)

    def count_feedback(self, after_id: int = 0) -> int:
        """How many feedback rows have an id above ``after_id`` (all of them by default).

        Raises:
            MonitoringError: The database cannot be read.
        """
        f = self._feedback
        query = sa.select(sa.func.count()).select_from(f).where(f.c.id > after_id)
        return int(self._read(lambda conn: conn.execute(query).scalar_one(), "the feedback count"))

    def feedback_rows(self, through_id: int | None = None) -> pd.DataFrame:
        """The stored feedback, oldest first.

        Args:
            through_id: Only rows with an id at most this (a watermark read earlier), when given.

        Returns:
            DataFrame with the columns of :data:`FEEDBACK_COLUMNS`: id, timestamp (UTC), text, label,
            prediction_id, model_version, predicted_label (the last three None where no prediction is
            linked).

        Raises:
            MonitoringError: The database cannot be read.
        """
        import pandas as pd

        f = self._feedback
        query = sa.select(*(f.c[name] for name in FEEDBACK_COLUMNS)).order_by(f.c.id)
        if through_id is not None:
            query = query.where(f.c.id <= through_id)
        rows = self._read(lambda conn: list(conn.execute(query).all()), "feedback")
        return pd.DataFrame(
            {
                "id": pd.Series([int(r.id) for r in rows], dtype="int64"),
                "timestamp": pd.to_datetime([_as_utc(r.timestamp) for r in rows], utc=True),
                "text": pd.Series([r.text for r in rows], dtype=object),
                "label": pd.Series([r.label for r in rows], dtype=object),
                "prediction_id": pd.Series([r.prediction_id for r in rows], dtype=object),
                "model_version": pd.Series([r.model_version for r in rows], dtype=object),
                "predicted_label": pd.Series([r.predicted_label for r in rows], dtype=object),
            },
            columns=list(FEEDBACK_COLUMNS),
        )

    def feedback_for(self, prediction_ids: Sequence[str]) -> pd.DataFrame:
        """The labels given to these predictions (by id, or by text linked to them).

        Args:
            prediction_ids: Prediction ids, e.g. those of a drift window; any number.

        Returns:
            DataFrame with columns prediction_id, label: one row per id that has feedback, in no
            particular order.

        Raises:
            MonitoringError: The database cannot be read.
        """
        import pandas as pd

        f = self._feedback
        wanted = sorted({str(pid) for pid in prediction_ids if pid is not None})

        def read(conn: Connection) -> list[Any]:
            rows: list[Any] = []
            for chunk in _chunks(wanted):
                query = sa.select(f.c.prediction_id, f.c.label).where(f.c.prediction_id.in_(chunk))
                rows.extend(conn.execute(query).all())
            return rows

        rows = self._read(read, "feedback") if wanted else []
        return pd.DataFrame(
            {
                "prediction_id": pd.Series([r.prediction_id for r in rows], dtype=object),
                "label": pd.Series([r.label for r in rows], dtype=object),
            },
            columns=["prediction_id", "label"],
        )

    def close(self) -> None:
        """Release pooled connections (the log reopens on the next call)."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
