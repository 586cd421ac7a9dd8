"""The retrain controller: check the served window for drift and decide whether to start a retrain.

One call of :func:`monitor` takes the newest predictions of the model now serving (the champion) from
the inference log, computes every drift signal of :mod:`refinery.monitoring.signals` against the
reference statistics kept with that model version (text descriptors, the model's own sentence
embeddings, its confidence, the accuracy estimated from calibrated probabilities, the accuracy
measured on labelled feedback) and records exactly one decision in the trigger log:

- ``insufficient_data``: the window is smaller than ``monitoring.min_window_size``;
- ``no_drift``: no signal allowed to fire (``monitoring.signals.<name>.fire``) fired;
- ``retrain_disabled``: a signal fired, but ``monitoring.retrain`` is off;
- ``drift_pending``: a signal fired, but not yet in ``monitoring.consecutive_windows`` windows in a row;
- ``awaiting_labels``: a signal fired, but fewer than ``monitoring.min_labelled_rows`` new labelled rows
  arrived since the champion was trained: a retrain would learn nothing new;
- ``suppressed_cooldown``: a retrain fired less than ``monitoring.cooldown_minutes`` ago;
- ``fired``: a retrain run was started.

Every decision names each signal with its value and threshold, the firing ones first.

A ``fired`` decision is claimed in the trigger log *before* the retrain starts, in one transaction
with a conditional update of a per-model claim row, so two monitors racing on the same drift start
one retrain, not two; the loser records ``suppressed_cooldown``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import pandas as pd
import sqlalchemy as sa

from refinery.config import MonitoringConfig, RunConfig
from refinery.db import create_engine, create_tables, mask_url
from refinery.errors import MonitoringError
from refinery.monitoring.drift import LABEL_COLUMN, DriftResult, detect_drift
from refinery.monitoring.signals import ReferenceStats, SignalResult
from refinery.results import to_jsonable, write_json

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
    drifting: bool | None = None
    signals: list[dict[str, Any]] | None = None

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
                timestamp=_utc(now),
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
        return _utc(datetime.fromisoformat(value) if isinstance(value, str) else value)

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


class Verdict(NamedTuple):
    """What the controller decided and why, before anything is recorded."""

    action: Action
    reason: str
    policy: str = ""  # the part of the reason beyond the signals: why a drift did or did not retrain


def firing(signals: list[SignalResult], cfg: MonitoringConfig) -> list[SignalResult]:
    """The signals that fired and are allowed to fire a retrain (``monitoring.signals.<name>.fire``)."""
    return [s for s in signals if s.fired and getattr(cfg.signals, s.name).fire]


def _signal_summary(signals: list[SignalResult], cfg: MonitoringConfig) -> str:
    fired = firing(signals, cfg)
    rest = [s for s in signals if s not in fired]
    parts = [f"{s.name} fired: {s.detail}" for s in fired]
    parts += [f"{s.name} {'fired (reported only)' if s.fired else 'quiet'}: {s.detail}" for s in rest]
    return "; ".join(parts)


def decide_action(
    window_rows: int,
    signals: list[SignalResult] | None,
    last_fired: datetime | None,
    cfg: MonitoringConfig,
    now: datetime,
    *,
    streak: int = 0,
    new_labelled_rows: int | None = None,
) -> Verdict:
    """The controller's decision, as a pure function of its inputs.

    Args:
        window_rows: Predictions in the current window.
        signals: Every signal's result on the window; None when the window was too small to test.
        last_fired: When a retrain last fired for this model, or None.
        cfg: Monitoring settings (``min_window_size``, ``signals``, ``consecutive_windows``,
            ``min_labelled_rows``, ``retrain``, ``cooldown_minutes``).
        now: The time of the decision.
        streak: Earlier windows in a row, of the same champion, in which a firing signal fired.
        new_labelled_rows: Labelled rows that arrived since the champion was trained (None: not counted,
            no source of new labels is configured).

    Returns:
        The action and a reason naming each signal with its value and threshold.

    Raises:
        ValueError: The window is large enough but no signal result was given.
    """
    if window_rows < cfg.min_window_size:
        return Verdict(
            "insufficient_data",
            f"window has {window_rows} prediction(s) of the serving model, fewer than"
            f" monitoring.min_window_size={cfg.min_window_size}",
        )
    if signals is None:
        raise ValueError(f"a window of {window_rows} predictions needs signal results to decide on")
    summary = _signal_summary(signals, cfg)

    def drift(action: Action, policy: str) -> Verdict:
        return Verdict(action, f"drift: {summary}; {policy}", policy)

    if not firing(signals, cfg):
        return Verdict("no_drift", f"no drift: {summary}")
    if not cfg.retrain:
        return drift("retrain_disabled", "monitoring.retrain is off")
    if streak + 1 < cfg.consecutive_windows:
        return drift(
            "drift_pending",
            f"window {streak + 1} in a row of the monitoring.consecutive_windows={cfg.consecutive_windows} needed",
        )
    labelled = cfg.min_labelled_rows
    if labelled and (new_labelled_rows or 0) < labelled:
        counted = (
            f"{new_labelled_rows} new labelled row(s) arrived"
            if new_labelled_rows is not None
            else "no source of new labels is configured (data.feedback, data.incoming_uri)"
        )
        return drift(
            "awaiting_labels",
            f"{counted} since the champion was trained, fewer than monitoring.min_labelled_rows={labelled}:"
            " a retrain would learn nothing new",
        )
    if last_fired is not None:
        until = _utc(last_fired) + timedelta(minutes=cfg.cooldown_minutes)
        if _utc(now) < until:
            return drift(
                "suppressed_cooldown",
                f"a retrain fired at {_utc(last_fired).isoformat()}, within the {cfg.cooldown_minutes:g} min"
                f" cooldown (until {until.isoformat()})",
            )
    counted = (
        f"{new_labelled_rows} new labelled row(s)" if new_labelled_rows is not None else "no labels counted"
    )
    return drift("fired", f"{counted}: starting a retrain")


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
        drift: The descriptor drift result; None for ``insufficient_data``.
        retrain_run_id: The run started for a ``fired`` decision.
        report_dir: Folder holding ``drift_report.html``, ``drift.json`` and ``decision.json``.
        signals: Every signal's result on the window (empty for ``insufficient_data``).
        new_labelled_rows: Labelled rows that arrived since the champion was trained (None: no source
            of new labels is configured).
        policy: Why a drift did or did not start a retrain (the trigger policy's part of ``reason``).
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
    signals: list[SignalResult] = field(default_factory=list)
    new_labelled_rows: int | None = None
    policy: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (timestamp as ISO 8601)."""
        data = to_jsonable(self)
        data["timestamp"] = self.timestamp.isoformat()
        return data

    def write_json(self, path: str | Path) -> Path:
        """Write the decision atomically as JSON to ``path``."""
        return write_json(self.to_dict(), path)

    def to_text(self) -> str:
        """A short human summary for the command line: the action, each signal, the policy's reason."""
        if not self.signals:
            lines = [f"{self.action}: {self.reason}"]
        else:
            fired = [s.name for s in self.signals if s.fired]
            lines = [
                f"{self.action}: " + (f"signals fired: {', '.join(fired)}" if fired else "no signal fired")
            ]
        lines.append(
            f"model {self.model_name} v{self.champion_version}, window of {self.window_rows} prediction(s)"
            " of that version"
        )
        for signal in self.signals:
            value = "not measured" if signal.value is None else f"{signal.value:.4f}"
            state = "FIRED" if signal.fired else "quiet"
            lines.append(f"  {signal.name:<18} {state:<6} {value:>12}  {signal.detail}")
        if self.new_labelled_rows is not None:
            lines.append(
                f"new labelled rows since v{self.champion_version} was trained: {self.new_labelled_rows}"
            )
        if self.signals and self.policy:
            lines.append(f"{self.action}: {self.policy}")
        if self.retrain_run_id:
            lines.append(f"retrain run: {self.retrain_run_id}")
        if self.drift is not None:
            lines.append(f"drift report: {self.drift.report}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The decision as the Kubeflow UI shows a monitor run's output: verdict, window, signals, policy."""
        lines = [
            f"## Drift monitor: {self.action}",
            "",
            f"Model **{self.model_name}** version {self.champion_version}: a window of {self.window_rows}"
            f" prediction(s) of that version, decision {self.decision_id} at {self.timestamp.isoformat()}.",
            "",
        ]
        if self.signals:
            lines += ["| signal | state | value | threshold | detail |", "|---|---|---:|---:|---|"]
            for s in self.signals:
                value = "not measured" if s.value is None else f"{s.value:.4f}"
                state = "**FIRED**" if s.fired else "quiet"
                lines.append(f"| {s.name} | {state} | {value} | {s.threshold:g} | {s.detail} |")
            lines.append("")
        if self.new_labelled_rows is not None:
            lines += [
                f"New labelled rows since version {self.champion_version} was trained: "
                f"{self.new_labelled_rows}.",
                "",
            ]
        lines.append(f"**Why:** {self.reason}")
        if self.retrain_run_id:
            lines += ["", f"**Retraining run:** {self.retrain_run_id}"]
        return "\n".join(lines) + "\n"


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


def _load_reference(registry: Any, version: str, tmp: Path) -> tuple[pd.DataFrame, ReferenceStats | None]:
    """The champion's descriptor profile, and its reference statistics (None for a version registered
    before they were kept)."""
    from refinery.evaluation.evaluate import MONITORING_DIR
    from refinery.monitoring.signals import ReferenceStats

    local = Path(registry.download(version, "reference", tmp))
    candidates = [local / REFERENCE_FILE, *sorted(local.rglob(REFERENCE_FILE))]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise MonitoringError(
            f"champion version {version}: its 'reference' artifact has no {REFERENCE_FILE} (looked in {local})"
        )
    try:
        descriptors = pd.read_parquet(found)
    except Exception as exc:
        raise MonitoringError(f"champion version {version}: cannot read {REFERENCE_FILE}: {exc}") from exc
    evaluation = Path(registry.download(version, "evaluation", tmp))
    stats_dir = evaluation / MONITORING_DIR
    stats = ReferenceStats.load(stats_dir) if stats_dir.is_dir() else None
    return descriptors, stats


def new_labelled_rows(cfg: RunConfig, champion_tags: dict[str, str]) -> int | None:
    """Labelled rows that arrived since the champion was trained: service feedback after the newest id it
    read, and rows of ``data.incoming_uri`` beyond those it read. None when neither source is configured.

    Raises:
        DataError: An incoming file cannot be read.
        MonitoringError: The feedback store cannot be read.
    """
    from refinery.data.load import read_table
    from refinery.data.sources import incoming_files
    from refinery.monitoring.inference_log import InferenceLog
    from refinery.registry.register import FEEDBACK_THROUGH_TAG, INCOMING_ROWS_TAG

    data = cfg.data
    if not data.feedback and not data.incoming_uri:
        return None
    count = 0
    if data.feedback and cfg.serving.inference_log:
        through = int(champion_tags.get(FEEDBACK_THROUGH_TAG, "0") or 0)
        count += InferenceLog(cfg.serving.inference_log).count_feedback(after_id=through)
    if data.incoming_uri:
        rows = sum(
            len(read_table(data.model_copy(update={"uri": uri, "format": "auto"})))
            for uri in incoming_files(data.incoming_uri)
        )
        count += max(0, rows - int(champion_tags.get(INCOMING_ROWS_TAG, "0") or 0))
    return count


@dataclass(frozen=True)
class WindowSignals:
    """Every signal's result on one window, and the descriptor drift report behind the first."""

    drift: DriftResult
    signals: list[SignalResult]


def window_signals(
    cfg: MonitoringConfig,
    window: pd.DataFrame,
    descriptors: pd.DataFrame,
    stats: ReferenceStats | None,
    model_dir: Path | None,
    feedback: pd.DataFrame,
    out_dir: Path,
    batch_size: int = 64,
    max_length: int = 128,
) -> WindowSignals:
    """Compute every drift signal on a window of served predictions.

    Args:
        cfg: Monitoring settings.
        window: The predictions: ``text``, ``label`` (predicted), ``scores`` (dict label -> probability)
            and ``prediction_id``.
        descriptors: The reference descriptor profile (training texts and labels).
        stats: The reference statistics kept with the model version; None leaves the embedding,
            confidence and estimated-accuracy signals unmeasured.
        model_dir: The serving model, to embed the window's texts; None leaves the embedding signal
            unmeasured.
        feedback: Labelled feedback on the window's predictions: ``prediction_id`` and ``label``.
        out_dir: Where the descriptor drift report goes.
        batch_size: Texts per forward pass when embedding.
        max_length: Token length the texts are truncated to when embedding (``model.max_length``).
    """
    import numpy as np

    from refinery.modeling import load_classifier
    from refinery.monitoring.descriptors import text_descriptors
    from refinery.monitoring.signals import (
        confidence_signal,
        descriptor_signal,
        embedding_signal,
        estimated_accuracy_signal,
        feedback_accuracy_signal,
    )

    texts = window["text"].astype(str).tolist()
    current = text_descriptors(texts)
    current[LABEL_COLUMN] = window[LABEL_COLUMN].astype(str).to_numpy()
    drift = detect_drift(descriptors, current, cfg, out_dir)
    signals = [descriptor_signal(drift, cfg.signals.descriptors)]

    def unmeasured(name: str, why: str) -> SignalResult:
        return SignalResult(name=name, value=None, threshold=0.0, fired=False, detail=f"not measured: {why}")

    if stats is None:
        why = "the champion was registered without reference statistics"
        others = ("embedding", "confidence", "estimated_accuracy", "feedback_accuracy")
        return WindowSignals(drift, [*signals, *(unmeasured(name, why) for name in others)])
    if model_dir is None:
        signals.append(unmeasured("embedding", "no model to embed the window with"))
    else:
        _, embeddings = load_classifier(model_dir, max_length=max_length).encode(texts, batch_size=batch_size)
        signals.append(embedding_signal(stats, embeddings, cfg.signals.embedding))
    labels = sorted({label for scores in window["scores"] for label in scores})
    probabilities = np.array(
        [[float(scores.get(label, 0.0)) for label in labels] for scores in window["scores"]], dtype=np.float32
    )
    signals.append(confidence_signal(stats, probabilities, cfg.signals.confidence))
    signals.append(estimated_accuracy_signal(stats, probabilities, cfg.signals.estimated_accuracy))
    truth = dict(zip(feedback["prediction_id"], feedback["label"], strict=True))
    labelled = window[window["prediction_id"].isin(list(truth))]
    signals.append(
        feedback_accuracy_signal(
            stats,
            labelled[LABEL_COLUMN].astype(str).tolist(),
            [str(truth[i]) for i in labelled["prediction_id"]],
            cfg.signals.feedback_accuracy,
        )
    )
    return WindowSignals(drift, signals)


def monitor(
    cfg: RunConfig,
    start_retrain: Callable[[], str],
    now: datetime | None = None,
    announce: Callable[[str], None] | None = None,
) -> MonitorDecision:
    """Check the newest predictions of the serving model for drift and maybe start a retrain.

    Args:
        cfg: The resolved run configuration (registry, serving.inference_log, monitoring, and the data
            section's sources of new labels).
        start_retrain: Starts a retraining run and returns its run id; called at most once, only for
            a ``fired`` decision.
        now: The time of the decision (default: the current UTC time); naive values are taken as UTC.
        announce: Called with the signals' summary and the verdict once the window is tested, before a
            retrain starts (the command line prints it, so the reason comes before the run's output).

    Returns:
        The decision, also recorded in the trigger log and, when the window was tested, saved as
        ``decision.json`` beside the drift report in a folder under ``monitoring.report_dir``.

    Raises:
        MonitoringError: No champion is registered, its reference profile is missing or unreadable, the
            inference log lacks the text or label column, or ``start_retrain`` returned no run id.
        Exception: Whatever ``start_retrain`` raised, after the failure is recorded on the ``fired`` row.
    """
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
    # What the configured environment serves (alias champion-<environment>).
    environment = cfg.gitops.environment
    champion = registry.champion(environment, legacy=True)
    if champion is None:
        raise MonitoringError(
            f"no champion version of model {model_name!r} in {environment} (alias champion-{environment}) "
            f"in the registry at {cfg.registry.tracking_uri}: nothing to monitor (promote a model first)"
        )
    triggers = TriggerLog(mon.trigger_log)
    log = InferenceLog(cfg.serving.inference_log)
    # Only the serving model's predictions: an older version's traffic says nothing about this one.
    window = log.recent(mon.window_size, model_version=champion.version)
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
    out_dir = _new_report_dir(Path(mon.report_dir), now)
    try:
        with tempfile.TemporaryDirectory(prefix="refinery-reference-") as tmp:
            descriptors, stats = _load_reference(registry, champion.version, Path(tmp))
            model_dir = registry.download(champion.version, "model", Path(tmp)) if stats is not None else None
            feedback = log.feedback_for(window["prediction_id"].tolist())
            measured = window_signals(
                mon,
                window,
                descriptors,
                stats,
                model_dir,
                feedback,
                out_dir,
                batch_size=cfg.training.eval_batch_size,
                max_length=cfg.model.max_length,
            )
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # no half-written report folder
        raise
    drift, signals = measured.drift, measured.signals
    fired_now = bool(firing(signals, mon))
    labelled = new_labelled_rows(cfg, dict(champion.tags)) if fired_now else None
    verdict = decide_action(
        rows,
        signals,
        triggers.last_fired(model_name),
        mon,
        now,
        streak=triggers.drifting_streak(model_name, champion.version) if fired_now else 0,
        new_labelled_rows=labelled,
    )
    if announce is not None:
        preview = MonitorDecision(
            action=verdict.action,
            reason=verdict.reason,
            timestamp=now,
            decision_id=0,
            signals=signals,
            new_labelled_rows=labelled,
            policy=verdict.policy,
            **common,
        )
        announce(preview.to_text())
    details: dict[str, Any] = {
        **common,
        "dataset_drift": drift.dataset_drift,
        "drifted_share": drift.drifted_share,
        "report": drift.report,
        "drifting": fired_now,
        "signals": [s.to_dict() for s in signals],
    }

    run_id: str | None = None
    if verdict.action != "fired":
        record = triggers.record(action=verdict.action, reason=verdict.reason, now=now, **details)
    else:
        claimed = triggers.claim(
            reason=verdict.reason,
            now=now,
            cooldown_minutes=mon.cooldown_minutes,
            **details,
        )
        if claimed is None:
            # Another monitor fired between our look at the log and our claim.
            policy = (
                f"another monitor fired at {triggers.last_fired(model_name)} within the"
                f" {mon.cooldown_minutes:g} min cooldown"
            )
            verdict = Verdict("suppressed_cooldown", f"{verdict.reason}; {policy}", policy)
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
            verdict = Verdict(verdict.action, record.reason, verdict.policy)

    decision = MonitorDecision(
        action=verdict.action,
        reason=verdict.reason,
        timestamp=now,
        decision_id=record.id,
        drift=drift,
        retrain_run_id=run_id,
        report_dir=str(out_dir),
        signals=signals,
        new_labelled_rows=labelled,
        policy=verdict.policy,
        **common,
    )
    decision.write_json(out_dir / DECISION_JSON)
    return decision
