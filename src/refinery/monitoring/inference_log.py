"""The inference log: every prediction the service makes, the input of drift monitoring.

One table, ``predictions``, behind a SQLAlchemy URL: a sqlite file in the embedded deployment,
PostgreSQL on a cluster. Several service workers append at once, so sqlite runs in WAL mode with a
busy timeout, and an append that still meets a locked database is retried a few times.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from refinery.db import create_engine, create_tables, is_sqlite_locked, mask_url, parse_url
from refinery.errors import MonitoringError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

TABLE_NAME = "predictions"
COLUMNS = ("timestamp", "text", "label", "scores", "model_name", "model_version")

_SQLITE_BUSY_TIMEOUT_S = 30
_LOCKED_RETRIES = 5


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PredictionRecord:
    """One served prediction."""

    text: str
    label: str
    scores: dict[str, float]
    model_name: str
    model_version: str
    timestamp: datetime = field(default_factory=_utc_now)


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
    )


class InferenceLog:
    """Append-only log of served predictions behind a SQLAlchemy URL.

    Nothing is opened until the first call; the first call creates the table (and, for sqlite, the
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
        return engine

    def append(self, records: Sequence[PredictionRecord]) -> None:
        """Write predictions in one transaction.

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
            }
            for r in records
        ]
        engine = self._connect()
        for attempt in range(_LOCKED_RETRIES):
            try:
                with engine.begin() as conn:
                    conn.execute(self._table.insert(), rows)
                return
            except OperationalError as exc:
                if not (self._is_sqlite() and is_sqlite_locked(exc)) or attempt == _LOCKED_RETRIES - 1:
                    raise MonitoringError(
                        f"cannot append {len(rows)} predictions to {self.url}: {exc}"
                    ) from exc
                logger.warning("inference log %s is locked; retrying (%d)", self.url, attempt + 1)
                time.sleep(0.1 * (attempt + 1))
            except SQLAlchemyError as exc:
                raise MonitoringError(f"cannot append {len(rows)} predictions to {self.url}: {exc}") from exc

    def recent(self, n: int) -> pd.DataFrame:
        """The newest ``n`` predictions, oldest first.

        Returns:
            DataFrame with columns timestamp (UTC), text, label, scores (dict), model_name, model_version.

        Raises:
            MonitoringError: The database cannot be read.
            ValueError: ``n`` is negative.
        """
        import pandas as pd

        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        t = self._table
        query = (
            sa.select(t.c.id, *(t.c[name] for name in COLUMNS))
            .order_by(t.c.timestamp.desc(), t.c.id.desc())
            .limit(n)
        )
        try:
            with self._connect().connect() as conn:
                rows = list(conn.execute(query).all())
        except SQLAlchemyError as exc:
            raise MonitoringError(f"cannot read predictions from {self.url}: {exc}") from exc
        rows.reverse()
        frame = pd.DataFrame(
            {
                "timestamp": pd.to_datetime([_as_utc(r.timestamp) for r in rows], utc=True),
                "text": [r.text for r in rows],
                "label": [r.label for r in rows],
                "scores": [dict(r.scores) for r in rows],
                "model_name": [r.model_name for r in rows],
                "model_version": [r.model_version for r in rows],
            },
            columns=list(COLUMNS),
        )
        return frame

    def count(self) -> int:
        """How many predictions the log holds.

        Raises:
            MonitoringError: The database cannot be read.
        """
        try:
            with self._connect().connect() as conn:
                return int(conn.execute(sa.select(sa.func.count()).select_from(self._table)).scalar_one())
        except SQLAlchemyError as exc:
            raise MonitoringError(f"cannot count predictions in {self.url}: {exc}") from exc

    def close(self) -> None:
        """Release pooled connections (the log reopens on the next call)."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
