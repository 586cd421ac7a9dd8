"""The retrain controller: check the served window for drift and decide whether to start a retrain.

One call of :func:`monitor` takes the newest predictions of the model now serving (the champion) from
the inference log, computes every drift signal of :mod:`refinery.monitoring.signals` against the
reference statistics kept with that model version (text descriptors, the model's own sentence
embeddings, its confidence, the accuracy estimated from calibrated probabilities, the accuracy
measured on labelled feedback), decides (:func:`~refinery.monitoring.decision.decide_action`: one of
``insufficient_data``, ``no_drift``, ``retrain_disabled``, ``drift_pending``, ``awaiting_labels``,
``suppressed_cooldown``, ``fired``) and records exactly one decision in the trigger log
(:mod:`refinery.monitoring.trigger_log`).

A ``fired`` decision is claimed in the trigger log *before* the retrain starts, so two monitors racing on
the same drift start one retrain, not two; the loser records ``suppressed_cooldown``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from refinery.config import MonitoringConfig, RunConfig
from refinery.errors import MonitoringError
from refinery.monitoring.decision import MonitorDecision, Verdict, decide_action, firing
from refinery.monitoring.drift import LABEL_COLUMN, DriftResult, detect_drift
from refinery.monitoring.signals import ReferenceStats, SignalResult
from refinery.monitoring.trigger_log import DecisionRecord, TriggerLog, utc

REFERENCE_FILE = "reference.parquet"
DECISION_JSON = "decision.json"


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
    from refinery.registry.lineage import FEEDBACK_THROUGH_TAG, INCOMING_ROWS_TAG

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
    now = utc(now) if now is not None else datetime.now(UTC)
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
        verdict, record, run_id = _fire(triggers, verdict, details, mon, now, start_retrain)

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


def _fire(
    triggers: TriggerLog,
    verdict: Verdict,
    details: dict[str, Any],
    mon: MonitoringConfig,
    now: datetime,
    start_retrain: Callable[[], str],
) -> tuple[Verdict, DecisionRecord, str | None]:
    """Claim a ``fired`` decision in the trigger log, then start the retrain.

    Returns:
        The final verdict (``suppressed_cooldown`` when another monitor claimed first), its trigger-log
        record, and the retrain's run id (None when none was started).

    Raises:
        MonitoringError: ``start_retrain`` returned no run id.
        Exception: Whatever ``start_retrain`` raised, after the failure is recorded on the claimed row.
    """
    claimed = triggers.claim(
        reason=verdict.reason,
        now=now,
        cooldown_minutes=mon.cooldown_minutes,
        **details,
    )
    if claimed is None:
        # Another monitor fired between our look at the log and our claim.
        policy = (
            f"another monitor fired at {triggers.last_fired(details['model_name'])} within the"
            f" {mon.cooldown_minutes:g} min cooldown"
        )
        verdict = Verdict("suppressed_cooldown", f"{verdict.reason}; {policy}", policy)
        return (
            verdict,
            triggers.record(action=verdict.action, reason=verdict.reason, now=now, **details),
            None,
        )
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
    record = triggers.update(
        claimed.id, retrain_run_id=started, reason=f"{verdict.reason}; retrain run {started}"
    )
    return Verdict(verdict.action, record.reason, verdict.policy), record, started
