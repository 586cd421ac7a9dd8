"""The retrain controller: check the served window for drift and decide whether to start a retrain.

One call of :func:`monitor` takes the newest predictions from the inference log, compares their
descriptors with the reference profile kept with the champion model, and records exactly one decision
in the trigger log:

- ``insufficient_data``: the window is smaller than ``monitoring.min_window_size``;
- ``no_drift``: Evidently found no dataset drift;
- ``retrain_disabled``: drift, but ``monitoring.retrain`` is off;
- ``suppressed_cooldown``: drift, but a retrain fired less than ``monitoring.cooldown_minutes`` ago;
- ``fired``: drift, and a retrain run was started.

A ``fired`` decision is claimed in the trigger log *before* the retrain starts, in one transaction
with a conditional update of a per-model claim row, so two monitors racing on the same drift start
one retrain, not two; the loser records ``suppressed_cooldown``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import pandas as pd
import sqlalchemy as sa

from refinery.config import MonitoringConfig, RunConfig
from refinery.db import create_engine, create_tables, mask_url
from refinery.errors import MonitoringError
from refinery.monitoring.drift import LABEL_COLUMN, DriftResult, detect_drift
from refinery.results import to_jsonable, write_json

Action = Literal["fired", "suppressed_cooldown", "no_drift", "insufficient_data", "retrain_disabled"]
ACTIONS: tuple[str, ...] = get_args(Action)
REFERENCE_FILE = "reference.parquet"
DECISION_JSON = "decision.json"
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


def _utc(moment: datetime) -> datetime:
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
class DecisionRecord:
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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (timestamp as ISO 8601)."""
        data = to_jsonable(self)
        data["timestamp"] = self.timestamp.isoformat()
        return data


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
        values["timestamp"] = _utc(values["timestamp"])
        if values["dataset_drift"] is not None:
            values["dataset_drift"] = bool(values["dataset_drift"])
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
                timestamp=_utc(now),
                model_name=model_name,
                action=action,
                reason=reason,
                champion_version=champion_version,
                window_rows=window_rows,
                dataset_drift=dataset_drift,
                drifted_share=drifted_share,
                report=report,
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
    ) -> DecisionRecord | None:
        """Atomically record a pending ``fired`` decision unless one fired within the cooldown.

        The check and the insert run in one transaction around a conditional update of the model's
        claim row, so of several monitors claiming at once exactly one wins.

        Returns:
            The new ``fired`` record (``retrain_run_id`` still empty), or None when another decision
            fired less than ``cooldown_minutes`` before ``now``.
        """
        now = _utc(now)
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
        return _utc(datetime.fromisoformat(value) if isinstance(value, str) else value)

    def decisions(self, model_name: str) -> list[DecisionRecord]:
        """Every decision recorded for ``model_name``, oldest first."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(_decisions).where(_decisions.c.model_name == model_name).order_by(_decisions.c.id)
            ).all()
        return [self._row(r) for r in rows]


class Verdict(NamedTuple):
    """What the controller decided and why, before anything is recorded."""

    action: Action
    reason: str


def _drift_summary(drift: DriftResult) -> str:
    columns = ", ".join(drift.drifted_columns) or "none"
    return f"{drift.drifted_share:.0%} of columns drifted ({columns}; threshold {drift.drift_share_threshold:.0%})"


def decide_action(
    window_rows: int,
    drift: DriftResult | None,
    last_fired: datetime | None,
    cfg: MonitoringConfig,
    now: datetime,
) -> Verdict:
    """The controller's decision, as a pure function of its inputs.

    Args:
        window_rows: Predictions in the current window.
        drift: The drift result for the window; None when the window was too small to test.
        last_fired: When a retrain last fired for this model, or None.
        cfg: Monitoring settings (``min_window_size``, ``retrain``, ``cooldown_minutes``).
        now: The time of the decision.

    Returns:
        The action and a reason naming the numbers behind it.

    Raises:
        ValueError: The window is large enough but no drift result was given.
    """
    if window_rows < cfg.min_window_size:
        return Verdict(
            "insufficient_data",
            f"window has {window_rows} prediction(s), fewer than monitoring.min_window_size={cfg.min_window_size}",
        )
    if drift is None:
        raise ValueError(f"a window of {window_rows} predictions needs a drift result to decide on")
    if not drift.dataset_drift:
        return Verdict("no_drift", f"no dataset drift: {_drift_summary(drift)}")
    if not cfg.retrain:
        return Verdict(
            "retrain_disabled", f"dataset drift: {_drift_summary(drift)}; monitoring.retrain is off"
        )
    if last_fired is not None:
        until = _utc(last_fired) + timedelta(minutes=cfg.cooldown_minutes)
        if _utc(now) < until:
            return Verdict(
                "suppressed_cooldown",
                f"dataset drift: {_drift_summary(drift)}; a retrain fired at {_utc(last_fired).isoformat()}, "
                f"within the {cfg.cooldown_minutes:g} min cooldown (until {until.isoformat()})",
            )
    return Verdict("fired", f"dataset drift: {_drift_summary(drift)}")


@dataclass(frozen=True)
class MonitorDecision:
    """The outcome of one :func:`monitor` call; written as ``decision.json`` next to the drift report.

    Attributes:
        action: One of ``fired``, ``suppressed_cooldown``, ``no_drift``, ``insufficient_data``,
            ``retrain_disabled``.
        reason: Why, with the numbers behind it.
        model_name: The registered model watched.
        champion_version: The champion version whose reference profile was used.
        window_rows: Predictions in the window.
        timestamp: When the decision was taken (UTC).
        decision_id: The row in the trigger log.
        drift: The drift result; None for ``insufficient_data``.
        retrain_run_id: The run started for a ``fired`` decision.
        report_dir: Folder holding ``drift_report.html``, ``drift.json`` and ``decision.json``.
    """

    action: Action
    reason: str
    model_name: str
    champion_version: str
    window_rows: int
    timestamp: datetime
    decision_id: int
    drift: DriftResult | None = None
    retrain_run_id: str | None = None
    report_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (timestamp as ISO 8601)."""
        data = to_jsonable(self)
        data["timestamp"] = self.timestamp.isoformat()
        return data

    def write_json(self, path: str | Path) -> Path:
        """Write the decision atomically as JSON to ``path``."""
        return write_json(self.to_dict(), path)

    def to_text(self) -> str:
        """A short human summary for the command line."""
        lines = [
            f"{self.action}: {self.reason}",
            f"model {self.model_name} v{self.champion_version}, window of {self.window_rows} prediction(s)",
        ]
        if self.retrain_run_id:
            lines.append(f"retrain run: {self.retrain_run_id}")
        if self.drift is not None:
            lines.append(f"drift report: {self.drift.report}")
        return "\n".join(lines)


def _new_report_dir(root: Path, now: datetime) -> Path:
    stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
    for attempt in range(1000):
        candidate = root / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise MonitoringError(f"cannot create a new report folder under {root} for {stamp}")


def _load_reference(registry: Any, version: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory(prefix="refinery-reference-") as tmp:
        local = Path(registry.download(version, "reference", Path(tmp)))
        candidates = [local / REFERENCE_FILE, *sorted(local.rglob(REFERENCE_FILE))]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise MonitoringError(
                f"champion version {version}: its 'reference' artifact has no {REFERENCE_FILE} (looked in {local})"
            )
        try:
            return pd.read_parquet(found)
        except Exception as exc:
            raise MonitoringError(f"champion version {version}: cannot read {REFERENCE_FILE}: {exc}") from exc


def monitor(cfg: RunConfig, start_retrain: Callable[[], str], now: datetime | None = None) -> MonitorDecision:
    """Check the newest served predictions for drift against the champion and maybe start a retrain.

    Args:
        cfg: The resolved run configuration (registry, serving.inference_log, monitoring).
        start_retrain: Starts a retraining run and returns its run id; called at most once, only for
            a ``fired`` decision.
        now: The time of the decision (default: the current UTC time); naive values are taken as UTC.

    Returns:
        The decision, also recorded in the trigger log and, when a drift report was written, saved as
        ``decision.json`` in its folder under ``monitoring.report_dir``.

    Raises:
        MonitoringError: No champion is registered, its reference profile is missing or unreadable, the
            inference log lacks the text or label column, or ``start_retrain`` returned no run id.
        Exception: Whatever ``start_retrain`` raised, after the failure is recorded on the ``fired`` row.
    """
    from refinery.monitoring.descriptors import text_descriptors
    from refinery.monitoring.inference_log import InferenceLog
    from refinery.registry.mlflow_registry import Registry

    mon = cfg.monitoring
    if mon.report_dir is None or mon.trigger_log is None or cfg.serving.inference_log is None:
        raise MonitoringError(
            "monitor needs a resolved configuration (load it with refinery.config.load_config)"
        )
    now = _utc(now) if now is not None else datetime.now(UTC)
    model_name = cfg.registry.model_name

    registry = Registry(cfg.registry)
    champion = registry.champion()
    if champion is None:
        raise MonitoringError(
            f"no champion version of model {model_name!r} in the registry at {cfg.registry.tracking_uri}: "
            "nothing to monitor (promote a model first)"
        )
    triggers = TriggerLog(mon.trigger_log)
    window = InferenceLog(cfg.serving.inference_log).recent(mon.window_size)
    rows = len(window)
    common: dict[str, Any] = {
        "model_name": model_name,
        "champion_version": champion.version,
        "window_rows": rows,
    }

    if rows < mon.min_window_size:
        verdict = decide_action(rows, None, None, mon, now)
        record = triggers.record(action=verdict.action, reason=verdict.reason, now=now, **common)
        return MonitorDecision(
            action=verdict.action, reason=verdict.reason, timestamp=now, decision_id=record.id, **common
        )

    missing = [c for c in ("text", LABEL_COLUMN) if c not in window.columns]
    if missing:
        raise MonitoringError(f"inference log {cfg.serving.inference_log}: window lacks column(s) {missing}")
    reference = _load_reference(registry, champion.version)
    current = text_descriptors(window["text"].astype(str).tolist())
    current[LABEL_COLUMN] = window[LABEL_COLUMN].astype(str).to_numpy()

    out_dir = _new_report_dir(Path(mon.report_dir), now)
    try:
        drift = detect_drift(reference, current, mon, out_dir)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # no half-written report folder
        raise
    verdict = decide_action(rows, drift, triggers.last_fired(model_name), mon, now)
    details: dict[str, Any] = {
        **common,
        "dataset_drift": drift.dataset_drift,
        "drifted_share": drift.drifted_share,
        "report": drift.report,
    }

    run_id: str | None = None
    if verdict.action != "fired":
        record = triggers.record(action=verdict.action, reason=verdict.reason, now=now, **details)
    else:
        claimed = triggers.claim(
            reason=f"{verdict.reason}; starting retrain",
            now=now,
            cooldown_minutes=mon.cooldown_minutes,
            **details,
        )
        if claimed is None:
            # Another monitor fired between our look at the log and our claim.
            verdict = Verdict(
                "suppressed_cooldown",
                f"{verdict.reason}; another monitor fired at "
                f"{triggers.last_fired(model_name)} within the {mon.cooldown_minutes:g} min cooldown",
            )
            record = triggers.record(action=verdict.action, reason=verdict.reason, now=now, **details)
        else:
            try:
                started = start_retrain()
                if not isinstance(started, str) or not started.strip():
                    raise MonitoringError(f"start_retrain returned {started!r} instead of a run id")
            except BaseException as exc:
                triggers.update(
                    claimed.id,
                    reason=f"{verdict.reason}; starting the retrain failed: {type(exc).__name__}: {exc}",
                )
                raise
            run_id = started
            record = triggers.update(
                claimed.id, retrain_run_id=run_id, reason=f"{verdict.reason}; retrain run {run_id}"
            )
            verdict = Verdict(verdict.action, record.reason)

    decision = MonitorDecision(
        action=verdict.action,
        reason=verdict.reason,
        timestamp=now,
        decision_id=record.id,
        drift=drift,
        retrain_run_id=run_id,
        report_dir=str(out_dir),
        **common,
    )
    decision.write_json(out_dir / DECISION_JSON)
    return decision
