"""The trigger log: every retrain decision of the controller, in a SQL database.

One row per decision (:class:`DecisionRecord`) in ``retrain_decisions``, and one claim row per model in
``retrain_claims``. A ``fired`` decision is claimed *before* the retrain starts, in one transaction with a
conditional update of the model's claim row, so two monitors racing on the same drift start one retrain,
not two; the loser records ``suppressed_cooldown`` (:meth:`TriggerLog.claim`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

import sqlalchemy as sa

from refinery.db import create_engine, create_tables, mask_url
from refinery.errors import MonitoringError
from refinery.results import Record

Action = Literal[
    "fired",
    "suppressed_cooldown",
    "no_drift",
    "insufficient_data",
    "retrain_disabled",
    "drift_pending",
    "awaiting_labels",
]
ACTIONS: tuple[str, ...] = get_args(Action)
_SQLITE_BUSY_TIMEOUT_S = 30

_metadata = sa.MetaData()
_decisions = sa.Table(
    "retrain_decisions",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.String(255), nullable=False),
    sa.Column("champion_version", sa.String(64), nullable=True),
    sa.Column("window_rows", sa.Integer, nullable=False),
    sa.Column("dataset_drift", sa.Boolean, nullable=True),
    sa.Column("drifted_share", sa.Float, nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("retrain_run_id", sa.String(255), nullable=True),
    sa.Column("report", sa.Text, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    # Whether a signal allowed to fire fired in this window (None: the window was not tested), and
    # every signal's result as JSON.
    sa.Column("drifting", sa.Boolean, nullable=True),
    sa.Column("signals", sa.JSON, nullable=True),
    sa.Index("ix_retrain_decisions_model_time", "model_name", "timestamp"),
)
# One row per model: the conditional UPDATE of `fired_at` is the lock that dedupes concurrent monitors.
_claims = sa.Table(
    "retrain_claims",
    _metadata,
    sa.Column("model_name", sa.String(255), primary_key=True),
    sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("decision_id", sa.Integer, nullable=True),
)


def utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _insert_decision(conn: sa.Connection, **values: Any) -> int:
    """Insert one decision row (no retrain run yet) and return its id."""
    return _inserted_id(conn.execute(sa.insert(_decisions).values(retrain_run_id=None, **values)))


def _inserted_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:
        raise MonitoringError("trigger log: the database returned no id for the new decision")
    return int(key[0])


@dataclass(frozen=True)
class DecisionRecord(Record):
    """One row of the ``retrain_decisions`` table."""

    id: int
    timestamp: datetime
    model_name: str
    champion_version: str | None
    window_rows: int
    dataset_drift: bool | None
    drifted_share: float | None
    action: str
    retrain_run_id: str | None
    report: str | None
    reason: str
    drifting: bool | None = None
    signals: list[dict[str, Any]] | None = None


class TriggerLog:
    """The record of every retrain decision, in a SQL database (SQLite by default, Postgres in a cluster).

    The tables are created on first use. Timestamps are stored and returned in UTC.
    """

    def __init__(self, url: str) -> None:
        """Open the trigger log.

        Args:
            url: SQLAlchemy URL, e.g. ``sqlite:////abs/path/triggers.db`` or ``postgresql+psycopg://...``.

        Raises:
            MonitoringError: The URL is not a usable SQLAlchemy URL, the folder of a sqlite file cannot be
                created, or the database driver is not installed.
        """
        self._engine = create_engine(
            url,
            what="trigger log",
            error=MonitoringError,
            # Concurrent monitors wait for each other's claim instead of failing on a locked file.
            sqlite_busy_timeout_s=_SQLITE_BUSY_TIMEOUT_S,
        )
        self._where = mask_url(self._engine.url)
        self._ready = False

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        try:
            if not self._ready:
                create_tables(self._engine, _metadata, what="trigger log", error=MonitoringError)
                self._ready = True
            with self._engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise MonitoringError(f"trigger log {self._where}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _row(row: Any) -> DecisionRecord:
        values = dict(row._mapping)
        values["timestamp"] = utc(values["timestamp"])
        for key in ("dataset_drift", "drifting"):
            if values[key] is not None:
                values[key] = bool(values[key])
        return DecisionRecord(**values)

    def _get(self, conn: sa.Connection, decision_id: int) -> DecisionRecord:
        row = conn.execute(sa.select(_decisions).where(_decisions.c.id == decision_id)).one_or_none()
        if row is None:
            raise MonitoringError(f"trigger log {self._where}: no decision with id {decision_id}")
        return self._row(row)

    def record(
        self,
        *,
        model_name: str,
        action: Action,
        reason: str,
        now: datetime,
        champion_version: str | None = None,
        window_rows: int = 0,
        dataset_drift: bool | None = None,
        drifted_share: float | None = None,
        report: str | None = None,
        drifting: bool | None = None,
        signals: list[dict[str, Any]] | None = None,
    ) -> DecisionRecord:
        """Record a decision that starts nothing (every action but ``fired``, which goes through :meth:`claim`).

        Raises:
            MonitoringError: ``action`` is unknown or ``fired``, or the database fails.
        """
        if action not in ACTIONS or action == "fired":
            raise MonitoringError(
                f"trigger log: cannot record action {action!r} directly (expected one of "
                f"{', '.join(a for a in ACTIONS if a != 'fired')}; 'fired' goes through claim())"
            )
        with self._tx() as conn:
            decision_id = _insert_decision(
                conn,
                timestamp=utc(now),
                model_name=model_name,
                action=action,
                reason=reason,
                champion_version=champion_version,
                window_rows=window_rows,
                dataset_drift=dataset_drift,
                drifted_share=drifted_share,
                report=report,
                drifting=drifting,
                signals=signals,
            )
            return self._get(conn, decision_id)

    def claim(
        self,
        *,
        model_name: str,
        reason: str,
        now: datetime,
        cooldown_minutes: float,
        champion_version: str | None = None,
        window_rows: int = 0,
        dataset_drift: bool | None = None,
        drifted_share: float | None = None,
        report: str | None = None,
        drifting: bool | None = None,
        signals: list[dict[str, Any]] | None = None,
    ) -> DecisionRecord | None:
        """Atomically record a pending ``fired`` decision unless one fired within the cooldown.

        The check and the insert run in one transaction around a conditional update of the model's
        claim row, so of several monitors claiming at once exactly one wins.

        Returns:
            The new ``fired`` record (``retrain_run_id`` still empty), or None when another decision
            fired less than ``cooldown_minutes`` before ``now``.
        """
        now = utc(now)
        cutoff = now - timedelta(minutes=cooldown_minutes)
        with self._tx() as conn:
            exists = conn.execute(
                sa.select(_claims.c.model_name).where(_claims.c.model_name == model_name)
            ).one_or_none()
        if exists is None:
            try:
                with self._engine.begin() as conn:
                    conn.execute(sa.insert(_claims).values(model_name=model_name, fired_at=None))
            except sa.exc.IntegrityError:
                pass  # another monitor created the row first; the update below decides
            except sa.exc.SQLAlchemyError as exc:
                raise MonitoringError(f"trigger log {self._where}: {type(exc).__name__}: {exc}") from exc
        with self._tx() as conn:
            won = conn.execute(
                sa.update(_claims)
                .where(
                    _claims.c.model_name == model_name,
                    sa.or_(_claims.c.fired_at.is_(None), _claims.c.fired_at <= cutoff),
                )
                .values(fired_at=now)
            )
            if won.rowcount != 1:
                return None
            decision_id = _insert_decision(
                conn,
                timestamp=now,
                model_name=model_name,
                action="fired",
                reason=reason,
                champion_version=champion_version,
                window_rows=window_rows,
                dataset_drift=dataset_drift,
                drifted_share=drifted_share,
                report=report,
                drifting=drifting,
                signals=signals,
            )
            conn.execute(
                sa.update(_claims).where(_claims.c.model_name == model_name).values(decision_id=decision_id)
            )
            return self._get(conn, decision_id)

    def update(self, decision_id: int, *, reason: str, retrain_run_id: str | None = None) -> DecisionRecord:
        """Fill in the outcome of a claimed decision: the retrain run id, or the reason it failed."""
        with self._tx() as conn:
            conn.execute(
                sa.update(_decisions)
                .where(_decisions.c.id == decision_id)
                .values(reason=reason, retrain_run_id=retrain_run_id)
            )
            return self._get(conn, decision_id)

    def last_fired(self, model_name: str) -> datetime | None:
        """When a retrain last fired for ``model_name`` (UTC), or None if never."""
        with self._tx() as conn:
            value = conn.execute(
                sa.select(sa.func.max(_decisions.c.timestamp)).where(
                    _decisions.c.model_name == model_name, _decisions.c.action == "fired"
                )
            ).scalar_one_or_none()
        if value is None:
            return None
        # SQLite returns an aggregate over a DateTime column as text.
        return utc(datetime.fromisoformat(value) if isinstance(value, str) else value)

    def drifting_streak(self, model_name: str, champion_version: str) -> int:
        """How many of the latest tested windows of ``champion_version`` in a row had a firing signal
        (windows too small to test are skipped; a retrain that fired ends the streak)."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(_decisions.c.drifting, _decisions.c.action)
                .where(
                    _decisions.c.model_name == model_name,
                    _decisions.c.champion_version == champion_version,
                    _decisions.c.drifting.is_not(None),
                )
                .order_by(_decisions.c.id.desc())
                .limit(1000)
            ).all()
        streak = 0
        for drifting, action in rows:
            if not drifting or action == "fired":
                break
            streak += 1
        return streak

    def decisions(self, model_name: str) -> list[DecisionRecord]:
        """Every decision recorded for ``model_name``, oldest first."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(_decisions).where(_decisions.c.model_name == model_name).order_by(_decisions.c.id)
            ).all()
        return [self._row(r) for r in rows]
