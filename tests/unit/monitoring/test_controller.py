"""The retrain controller: the decision table, the trigger log, and monitor() over a real registry,
inference log and Evidently."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.conftest import config_in

from refinery.config import MonitoringConfig, RunConfig, load_config
from refinery.errors import MonitoringError
from refinery.monitoring.controller import DECISION_JSON, monitor
from refinery.monitoring.decision import decide_action
from refinery.monitoring.drift import ColumnDrift, DriftResult
from refinery.monitoring.signals import SignalResult
from refinery.monitoring.trigger_log import TriggerLog

REPO_ROOT = Path(__file__).resolve().parents[3]
LABELS = ("negative", "positive")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def drift_result(dataset_drift: bool) -> DriftResult:
    columns = {
        "text_length": ColumnDrift(
            score=1e-9 if dataset_drift else 0.4,
            method="ks",
            threshold=0.05,
            drifted=dataset_drift,
            kind="numerical",
        ),
        "label": ColumnDrift(
            score=0.3, method="chisquare", threshold=0.05, drifted=False, kind="categorical"
        ),
    }
    return DriftResult(
        dataset_drift=dataset_drift,
        drifted_share=0.5 if dataset_drift else 0.0,
        drifted_columns=["text_length"] if dataset_drift else [],
        columns=columns,
        reference_rows=400,
        current_rows=200,
        drift_share_threshold=0.5,
        stattest_threshold=0.05,
        report="/reports/drift_report.html",
    )


# -- decide_action: the pure decision table ------------------------------------------------------------


def signal(name: str, fired: bool, value: float = 0.8, threshold: float = 0.6) -> SignalResult:
    return SignalResult(name=name, value=value, threshold=threshold, fired=fired, detail=f"{name} {value}")


DRIFT = [signal("descriptors", False, 0.1, 0.5), signal("embedding", True, 0.83, 0.6)]
NO_DRIFT = [signal("descriptors", False, 0.1, 0.5), signal("embedding", False, 0.52, 0.6)]
REPORTED_ONLY = [signal("confidence", True, 0.001, 0.01), signal("embedding", False, 0.52, 0.6)]


@pytest.mark.parametrize(
    ("window_rows", "signals", "last_fired", "settings", "expected", "reason"),
    [
        (
            10,
            None,
            None,
            {},
            "insufficient_data",
            "window has 10 prediction(s) of the serving model, fewer than monitoring.min_window_size=50",
        ),
        (
            49,
            None,
            T0 - timedelta(days=1),
            {},
            "insufficient_data",
            "window has 49 prediction(s) of the serving model, fewer than monitoring.min_window_size=50",
        ),
        (
            200,
            NO_DRIFT,
            None,
            {},
            "no_drift",
            "no drift: descriptors quiet: descriptors 0.1; embedding quiet: embedding 0.52",
        ),
        (
            200,
            NO_DRIFT,
            T0 - timedelta(minutes=5),
            {},
            "no_drift",
            "no drift: descriptors quiet: descriptors 0.1; embedding quiet: embedding 0.52",
        ),
        (
            200,
            REPORTED_ONLY,
            None,
            {},
            "no_drift",
            "no drift: confidence fired (reported only): confidence 0.001; embedding quiet",
        ),
        (
            200,
            DRIFT,
            None,
            {},
            "fired",
            "drift: embedding fired: embedding 0.83; descriptors quiet: descriptors 0.1; 10 new labelled row(s): starting a retrain",
        ),
        (
            200,
            DRIFT,
            T0 - timedelta(minutes=59),
            {},
            "suppressed_cooldown",
            "a retrain fired at 2025-03-01T11:01:00+00:00, within the 60 min cooldown (until 2025-03-01T12:01:00+00:00)",
        ),
        (200, DRIFT, T0 - timedelta(minutes=60), {}, "fired", "10 new labelled row(s): starting a retrain"),
        (200, DRIFT, T0 - timedelta(hours=5), {}, "fired", "10 new labelled row(s): starting a retrain"),
        (
            200,
            DRIFT,
            T0 - timedelta(minutes=1),
            {"cooldown_minutes": 0},
            "fired",
            "10 new labelled row(s): starting a retrain",
        ),
        (
            200,
            DRIFT,
            None,
            {"retrain": False},
            "retrain_disabled",
            "drift: embedding fired: embedding 0.83; descriptors quiet: descriptors 0.1; monitoring.retrain is off",
        ),
        (
            200,
            DRIFT,
            T0 - timedelta(minutes=1),
            {"retrain": False},
            "retrain_disabled",
            "; monitoring.retrain is off",
        ),
        (200, NO_DRIFT, None, {"retrain": False}, "no_drift", "no drift: descriptors quiet"),
        (
            200,
            DRIFT,
            None,
            {"consecutive_windows": 2},
            "drift_pending",
            "window 1 in a row of the monitoring.consecutive_windows=2 needed",
        ),
        (
            200,
            DRIFT,
            None,
            {"signals": {"embedding": {"fire": False}}},
            "no_drift",
            "no drift: descriptors quiet: descriptors 0.1; embedding fired (reported only): embedding 0.83",
        ),
        (
            200,
            DRIFT,
            None,
            {"min_labelled_rows": 100},
            "awaiting_labels",
            "10 new labelled row(s) arrived since the champion was trained, fewer than monitoring.min_labelled_rows=100",
        ),
    ],
    ids=[
        "tiny-window",
        "just-below-min-window",
        "no-drift",
        "no-drift-after-recent-fire",
        "only-a-reported-signal-fired",
        "drift-never-fired",
        "drift-within-cooldown",
        "drift-at-cooldown-end",
        "drift-after-cooldown",
        "drift-no-cooldown",
        "drift-retrain-disabled",
        "drift-retrain-disabled-within-cooldown",
        "no-drift-retrain-disabled",
        "first-of-two-windows",
        "signal-not-allowed-to-fire",
        "too-few-labels",
    ],
)
def test_decide_action_table(
    window_rows: int,
    signals: list[SignalResult] | None,
    last_fired: datetime | None,
    settings: dict[str, object],
    expected: str,
    reason: str,
) -> None:
    cfg = MonitoringConfig(
        **{"min_window_size": 50, "cooldown_minutes": 60, "min_labelled_rows": 0, **settings}
    )
    verdict = decide_action(window_rows, signals, last_fired, cfg, T0, new_labelled_rows=10)
    assert verdict.action == expected
    assert reason in verdict.reason


def test_decide_action_counts_consecutive_windows_and_labels() -> None:
    cfg = MonitoringConfig(consecutive_windows=3, min_labelled_rows=100)
    pending = decide_action(200, DRIFT, None, cfg, T0, streak=1, new_labelled_rows=500)
    assert pending.action == "drift_pending" and "window 2 in a row" in pending.reason
    assert decide_action(200, DRIFT, None, cfg, T0, streak=2, new_labelled_rows=500).action == "fired"
    waiting = decide_action(200, DRIFT, None, cfg, T0, streak=2, new_labelled_rows=99)
    assert waiting.action == "awaiting_labels"
    assert "99 new labelled row(s)" in waiting.reason and "min_labelled_rows=100" in waiting.reason
    unconfigured = decide_action(200, DRIFT, None, cfg, T0, streak=2, new_labelled_rows=None)
    assert "no source of new labels is configured" in unconfigured.reason


def test_decide_action_reasons_name_the_signal_and_its_value() -> None:
    cfg = MonitoringConfig(min_window_size=50, cooldown_minutes=60, min_labelled_rows=0)
    assert "min_window_size=50" in decide_action(10, None, None, cfg, T0).reason
    fired = decide_action(200, DRIFT, None, cfg, T0).reason
    assert fired.startswith("drift: embedding fired: embedding 0.83")
    assert "descriptors quiet" in fired
    assert "confidence fired (reported only)" in decide_action(200, REPORTED_ONLY, None, cfg, T0).reason
    suppressed = decide_action(200, DRIFT, T0 - timedelta(minutes=10), cfg, T0).reason
    assert "60 min cooldown" in suppressed and "2025-03-01T11:50:00+00:00" in suppressed


def test_decide_action_naive_times_are_utc() -> None:
    cfg = MonitoringConfig(cooldown_minutes=60, min_labelled_rows=0)
    naive_now = T0.replace(tzinfo=None)
    assert (
        decide_action(200, DRIFT, naive_now - timedelta(minutes=30), cfg, naive_now).action
        == "suppressed_cooldown"
    )


def test_decide_action_needs_signals_for_a_full_window() -> None:
    with pytest.raises(ValueError, match="needs signal results"):
        decide_action(200, None, None, MonitoringConfig(), T0)


# -- TriggerLog ------------------------------------------------------------------------------------------


def test_a_trigger_log_from_before_the_signals_gains_their_columns(sql_url: str) -> None:
    import sqlalchemy as sa

    # The decisions table as the release before drift signals created it.
    old = sa.MetaData()
    table = sa.Table(
        "retrain_decisions",
        old,
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
    )
    engine = sa.create_engine(sql_url)
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert().values(
                timestamp=T0, model_name="m", window_rows=10, action="insufficient_data", reason="old"
            )
        )
    engine.dispose()

    log = TriggerLog(sql_url)
    signals = [signal("embedding", True).to_dict()]
    log.record(model_name="m", action="no_drift", reason="new", now=T0, drifting=False, signals=signals)
    old_row, new_row = log.decisions("m")
    assert (old_row.reason, old_row.drifting, old_row.signals) == ("old", None, None)
    assert (new_row.drifting, new_row.signals) == (False, signals)


def test_trigger_log_records_every_decision(sql_url: str) -> None:
    # sql_url: a sqlite file, then a database on the session's throwaway PostgreSQL server.
    log = TriggerLog(sql_url)
    assert log.decisions("m") == []
    assert log.last_fired("m") is None

    log.record(
        model_name="m",
        action="insufficient_data",
        reason="small",
        now=T0,
        champion_version="1",
        window_rows=3,
    )
    log.record(
        model_name="m",
        action="no_drift",
        reason="calm",
        now=T0 + timedelta(minutes=1),
        champion_version="1",
        window_rows=200,
        dataset_drift=False,
        drifted_share=0.0,
        report="/r1",
    )
    fired = log.claim(
        model_name="m",
        reason="drift",
        now=T0 + timedelta(minutes=2),
        cooldown_minutes=60,
        champion_version="1",
        window_rows=200,
        dataset_drift=True,
        drifted_share=0.75,
        report="/r2",
    )
    assert fired is not None and fired.action == "fired" and fired.retrain_run_id is None
    done = log.update(fired.id, reason="drift; retrain run r-1", retrain_run_id="r-1")
    log.record(
        model_name="m",
        action="suppressed_cooldown",
        reason="cool",
        now=T0 + timedelta(minutes=3),
        champion_version="1",
        window_rows=200,
        dataset_drift=True,
        drifted_share=0.75,
    )
    log.record(
        model_name="m",
        action="retrain_disabled",
        reason="off",
        now=T0 + timedelta(minutes=4),
        champion_version="1",
        window_rows=200,
        dataset_drift=True,
        drifted_share=0.75,
    )
    log.record(model_name="other", action="no_drift", reason="calm", now=T0, window_rows=100)

    # A fresh TriggerLog on the same URL reads the same history: nothing is held in memory.
    rows = TriggerLog(sql_url).decisions("m")
    assert [r.action for r in rows] == [
        "insufficient_data",
        "no_drift",
        "fired",
        "suppressed_cooldown",
        "retrain_disabled",
    ]
    assert rows[2] == done
    assert done.retrain_run_id == "r-1" and done.reason == "drift; retrain run r-1"
    assert rows[1].dataset_drift is False and rows[1].drifted_share == 0.0 and rows[1].report == "/r1"
    assert rows[0].dataset_drift is None and rows[0].window_rows == 3
    assert all(r.timestamp.tzinfo == UTC for r in rows)
    assert rows[3].timestamp == T0 + timedelta(minutes=3)
    assert log.last_fired("m") == T0 + timedelta(minutes=2)
    assert log.last_fired("other") is None
    assert json.loads(json.dumps(rows[2].to_dict()))["timestamp"] == "2025-03-01T12:02:00+00:00"


def test_trigger_log_claim_respects_the_cooldown(sql_url: str) -> None:
    log = TriggerLog(sql_url)
    first = log.claim(model_name="m", reason="drift", now=T0, cooldown_minutes=60)
    assert first is not None
    assert (
        log.claim(model_name="m", reason="drift", now=T0 + timedelta(minutes=59), cooldown_minutes=60) is None
    )
    # Another model has its own cooldown.
    assert log.claim(model_name="other", reason="drift", now=T0, cooldown_minutes=60) is not None
    again = log.claim(model_name="m", reason="drift", now=T0 + timedelta(minutes=60), cooldown_minutes=60)
    assert again is not None and again.id != first.id
    assert log.last_fired("m") == T0 + timedelta(minutes=60)
    assert [r.action for r in log.decisions("m")] == ["fired", "fired"]


def test_concurrent_claims_fire_once(sql_url: str) -> None:
    url = sql_url
    TriggerLog(url).decisions("m")  # create the tables up front, as a running system would have them
    barrier = threading.Barrier(6)
    won: list[bool] = []
    errors: list[BaseException] = []

    def claim() -> None:
        log = TriggerLog(url)  # one per monitor, as separate processes would have
        barrier.wait()
        try:
            won.append(log.claim(model_name="m", reason="drift", now=T0, cooldown_minutes=60) is not None)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(won) == [False] * 5 + [True]
    assert [r.action for r in TriggerLog(url).decisions("m")] == ["fired"]


def test_concurrent_first_use_creates_the_tables_once(sql_url: str) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def first_use() -> None:
        log = TriggerLog(sql_url)  # one per monitor; none finds the tables
        barrier.wait()
        try:
            log.record(model_name="m", action="no_drift", reason="calm", now=T0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [r.action for r in TriggerLog(sql_url).decisions("m")] == ["no_drift"] * 4


def test_trigger_log_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(MonitoringError, match="not a SQLAlchemy URL"):
        TriggerLog("not a url")
    log = TriggerLog(f"sqlite:///{tmp_path / 'triggers.db'}")
    with pytest.raises(MonitoringError, match="'fired' goes through claim"):
        log.record(model_name="m", action="fired", reason="x", now=T0)  # type: ignore[arg-type]
    with pytest.raises(MonitoringError, match="cannot record action 'exploded'"):
        log.record(model_name="m", action="exploded", reason="x", now=T0)  # type: ignore[arg-type]
    assert log.decisions("m") == []


# -- monitor(): real registry (MLflow on sqlite), inference log, descriptors and Evidently ----------------


def register_champion(root: Path, model_dir: Path, seed: int, with_stats: bool) -> dict[str, object]:
    """A registry under ``root`` whose champion carries a reference profile of 400 generated reviews
    and, ``with_stats``, the reference statistics evaluate keeps (the model's embeddings and
    probabilities of those reviews)."""
    import numpy as np

    from refinery.data.demo import generate_reviews
    from refinery.evaluation.evaluate import MONITORING_DIR
    from refinery.modeling import load_classifier
    from refinery.monitoring.descriptors import text_descriptors
    from refinery.monitoring.signals import fit_reference
    from refinery.registry.mlflow_registry import Registry

    cfg = config_in(root, model_dir)
    reviews = generate_reviews(n=400, seed=seed)
    prepared = root / "prepared"
    prepared.mkdir()
    reference = text_descriptors(reviews["text"].tolist())
    reference["label"] = reviews["label"].to_numpy()
    reference.to_parquet(prepared / "reference.parquet", index=False)
    evaluation = root / "evaluation"
    evaluation.mkdir()
    (evaluation / "evaluation.json").write_text(json.dumps({"macro_f1": 0.9}), encoding="utf-8")
    if with_stats:
        classifier = load_classifier(model_dir)
        probabilities, embeddings = classifier.encode(reviews["text"].tolist())
        truth = reviews["label"].map({label: i for i, label in enumerate(classifier.labels)}).to_numpy()
        fit_reference(embeddings, probabilities, np.asarray(truth)).save(evaluation / MONITORING_DIR)

    registry = Registry(cfg.registry)
    version = registry.register(
        model_dir, prepared, evaluation, tags={"data_sha256": "test"}, metrics={"macro_f1": 0.9}
    )
    registry.set_champion(version.version, cfg.gitops.environment)
    return {
        "root": root,
        "tracking_uri": cfg.registry.tracking_uri,
        "artifact_location": cfg.registry.artifact_location,
        "version": version.version,
    }


@pytest.fixture(scope="module")
def champion_state(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, object]:
    """A champion with a reference profile only, as versions registered before reference statistics."""
    return register_champion(tmp_path_factory.mktemp("monitor-registry"), tiny_model_dir, 0, with_stats=False)


def watching(champion: dict[str, object], state_dir: Path, *extra: str) -> list[str]:
    """``--set`` overrides of configs/test.yaml for a monitor of ``champion`` (from
    :func:`register_champion`) with its own state (inference log, trigger log, reports) in ``state_dir``:
    windows of 200, tested from 50 predictions, then ``extra``."""
    root = champion["root"]
    return [
        f"state_dir={state_dir}",
        f"data.uri={root}/reviews.csv",
        f"model.base={root}",
        f"registry.tracking_uri={champion['tracking_uri']}",
        f"registry.artifact_location={champion['artifact_location']}",
        "monitoring.window_size=200",
        "monitoring.min_window_size=50",
        *extra,
    ]


@pytest.fixture
def monitor_config(champion_state: dict[str, object], tmp_path: Path) -> Callable[..., RunConfig]:
    """A config on the shared registry with this test's own inference log, trigger log and report folder."""

    def _make(overrides: list[str] | None = None) -> RunConfig:
        settings = ["monitoring.cooldown_minutes=60", "monitoring.min_labelled_rows=0", *(overrides or [])]
        return load_config(
            REPO_ROOT / "configs" / "test.yaml",
            watching(champion_state, tmp_path / "state", *settings),
            base=REPO_ROOT,
        )

    return _make


def fill_log(cfg: RunConfig, version: str, n: int, seed: int, drifted: bool) -> None:
    from refinery.data.demo import generate_reviews
    from refinery.monitoring.inference_log import InferenceLog, PredictionRecord

    served = generate_reviews(n=n, seed=seed, drifted=drifted)
    records = [
        PredictionRecord(
            text=text,
            label=label,
            scores={lab: (0.9 if lab == label else 0.1) for lab in LABELS},
            model_name=cfg.registry.model_name,
            model_version=version,
            timestamp=T0 - timedelta(minutes=30) + timedelta(seconds=i),
        )
        for i, (text, label) in enumerate(zip(served["text"], served["label"], strict=True))
    ]
    InferenceLog(cfg.serving.inference_log).append(records)


class RetrainStarter:
    """Counts how often the controller starts a retrain and hands back run ids."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"retrain-{self.calls}"


def test_drifted_window_fires_once_then_cooldown_suppresses(
    monitor_config: Callable[..., RunConfig], champion_state: dict[str, object]
) -> None:
    cfg = monitor_config()
    version = str(champion_state["version"])
    fill_log(cfg, version, n=200, seed=1, drifted=True)
    start = RetrainStarter()

    first = monitor(cfg, start, now=T0)
    assert first.action == "fired", first.reason
    assert first.retrain_run_id == "retrain-1"
    assert first.champion_version == version
    assert first.window_rows == 200
    assert first.drift is not None and first.drift.dataset_drift
    assert {"text_length", "word_count"} <= set(first.drift.drifted_columns)
    report_dir = Path(str(first.report_dir))
    assert report_dir.parent == Path(str(cfg.monitoring.report_dir))
    assert (report_dir / "drift_report.html").is_file()
    assert (report_dir / "drift.json").is_file()
    saved = json.loads((report_dir / DECISION_JSON).read_text(encoding="utf-8"))
    assert saved["action"] == "fired" and saved["retrain_run_id"] == "retrain-1"

    second = monitor(cfg, start, now=T0 + timedelta(minutes=15))
    assert second.action == "suppressed_cooldown", second.reason
    assert second.retrain_run_id is None
    assert second.report_dir != first.report_dir
    assert start.calls == 1

    log = TriggerLog(str(cfg.monitoring.trigger_log))
    rows = log.decisions(cfg.registry.model_name)
    assert [r.action for r in rows] == ["fired", "suppressed_cooldown"]
    assert rows[0].retrain_run_id == "retrain-1" and "retrain run retrain-1" in rows[0].reason
    assert rows[0].champion_version == version and rows[0].window_rows == 200
    assert rows[0].dataset_drift is True and rows[0].report == first.drift.report
    assert log.last_fired(cfg.registry.model_name) == T0

    third = monitor(cfg, start, now=T0 + timedelta(minutes=61))
    assert third.action == "fired" and third.retrain_run_id == "retrain-2"
    assert start.calls == 2


def test_window_like_the_training_data_is_no_drift(
    monitor_config: Callable[..., RunConfig], champion_state: dict[str, object]
) -> None:
    cfg = monitor_config()
    fill_log(cfg, str(champion_state["version"]), n=200, seed=2, drifted=False)
    start = RetrainStarter()

    decision = monitor(cfg, start, now=T0)
    assert decision.action == "no_drift", decision.reason
    assert decision.drift is not None and not decision.drift.dataset_drift
    assert start.calls == 0
    assert [
        r.action for r in TriggerLog(str(cfg.monitoring.trigger_log)).decisions(cfg.registry.model_name)
    ] == ["no_drift"]


def test_small_window_is_insufficient_data(
    monitor_config: Callable[..., RunConfig], champion_state: dict[str, object]
) -> None:
    cfg = monitor_config()
    fill_log(cfg, str(champion_state["version"]), n=20, seed=3, drifted=True)
    start = RetrainStarter()

    decision = monitor(cfg, start, now=T0)
    assert decision.action == "insufficient_data"
    assert decision.window_rows == 20 and decision.drift is None and decision.report_dir is None
    assert start.calls == 0
    assert not Path(str(cfg.monitoring.report_dir)).exists()
    rows = TriggerLog(str(cfg.monitoring.trigger_log)).decisions(cfg.registry.model_name)
    assert [(r.action, r.window_rows) for r in rows] == [("insufficient_data", 20)]


def test_retrain_disabled_records_and_starts_nothing(
    monitor_config: Callable[..., RunConfig], champion_state: dict[str, object]
) -> None:
    cfg = monitor_config(["monitoring.retrain=false"])
    fill_log(cfg, str(champion_state["version"]), n=200, seed=4, drifted=True)
    start = RetrainStarter()

    decision = monitor(cfg, start, now=T0)
    assert decision.action == "retrain_disabled"
    assert start.calls == 0
    assert TriggerLog(str(cfg.monitoring.trigger_log)).last_fired(cfg.registry.model_name) is None


def test_failed_retrain_start_is_recorded_and_raised(
    monitor_config: Callable[..., RunConfig], champion_state: dict[str, object]
) -> None:
    cfg = monitor_config()
    fill_log(cfg, str(champion_state["version"]), n=200, seed=5, drifted=True)

    def broken() -> str:
        raise RuntimeError("pipeline backend unreachable")

    with pytest.raises(RuntimeError, match="pipeline backend unreachable"):
        monitor(cfg, broken, now=T0)
    rows = TriggerLog(str(cfg.monitoring.trigger_log)).decisions(cfg.registry.model_name)
    assert [r.action for r in rows] == ["fired"]
    assert rows[0].retrain_run_id is None
    assert "starting the retrain failed: RuntimeError: pipeline backend unreachable" in rows[0].reason

    # The attempt counts for the cooldown: a broken backend is not hammered on every run.
    start = RetrainStarter()
    assert monitor(cfg, start, now=T0 + timedelta(minutes=5)).action == "suppressed_cooldown"
    assert start.calls == 0


def test_no_champion_is_an_error_and_records_nothing(tmp_path: Path) -> None:
    cfg = config_in(tmp_path, tmp_path)
    start = RetrainStarter()
    with pytest.raises(MonitoringError, match="no champion version of model 'review-sentiment-test'"):
        monitor(cfg, start)
    assert start.calls == 0
    assert TriggerLog(str(cfg.monitoring.trigger_log)).decisions(cfg.registry.model_name) == []


def test_monitor_decision_round_trips_as_json(
    monitor_config: Callable[..., RunConfig], champion_state: dict[str, object]
) -> None:
    cfg = monitor_config()
    fill_log(cfg, str(champion_state["version"]), n=60, seed=6, drifted=False)
    decision = monitor(cfg, RetrainStarter(), now=T0)
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["timestamp"] == T0.isoformat()
    assert data["drift"]["current_rows"] == 60
    assert data["action"] == decision.action and data["decision_id"] == decision.decision_id
    assert decision.to_text().startswith(f"{decision.action}: ")
    assert "drift_report.html" in decision.to_text()


# -- the window, the labels policy and the signals that follow the model -------------------------------


def test_window_counts_only_the_serving_versions_predictions(
    monitor_config: Callable[..., RunConfig], champion_state: dict[str, object]
) -> None:
    cfg = monitor_config()
    fill_log(cfg, "999", n=200, seed=7, drifted=True)  # an older version's traffic
    fill_log(cfg, str(champion_state["version"]), n=30, seed=8, drifted=True)
    decision = monitor(cfg, RetrainStarter(), now=T0)
    assert decision.action == "insufficient_data"
    assert decision.window_rows == 30


def test_drift_waits_for_new_labels_then_fires(
    monitor_config: Callable[..., RunConfig], champion_state: dict[str, object]
) -> None:
    from refinery.monitoring.inference_log import InferenceLog

    cfg = monitor_config(["data.feedback=true", "monitoring.min_labelled_rows=50"])
    version = str(champion_state["version"])
    fill_log(cfg, version, n=200, seed=9, drifted=True)
    start = RetrainStarter()

    waiting = monitor(cfg, start, now=T0)
    assert waiting.action == "awaiting_labels", waiting.reason
    assert waiting.new_labelled_rows == 0 and start.calls == 0
    assert "fewer than monitoring.min_labelled_rows=50" in waiting.reason

    log = InferenceLog(str(cfg.serving.inference_log))
    window = log.recent(200, model_version=version)
    log.add_feedback(
        [{"prediction_id": pid, "label": "negative"} for pid in window["prediction_id"][:60]],
        LABELS,
        max_text_chars=2000,
    )
    fired = monitor(cfg, start, now=T0 + timedelta(minutes=1))
    assert fired.action == "fired", fired.reason
    assert fired.new_labelled_rows == 60 and start.calls == 1
    assert "60 new labelled row(s)" in fired.reason


def test_consecutive_windows_must_all_drift(
    monitor_config: Callable[..., RunConfig], champion_state: dict[str, object]
) -> None:
    cfg = monitor_config(["monitoring.consecutive_windows=2"])
    fill_log(cfg, str(champion_state["version"]), n=200, seed=10, drifted=True)
    start = RetrainStarter()
    first = monitor(cfg, start, now=T0)
    assert first.action == "drift_pending" and "window 1 in a row" in first.reason
    second = monitor(cfg, start, now=T0 + timedelta(minutes=1))
    assert second.action == "fired" and start.calls == 1
    rows = TriggerLog(str(cfg.monitoring.trigger_log)).decisions(cfg.registry.model_name)
    assert [r.drifting for r in rows] == [True, True]
    assert {s["name"] for s in rows[0].signals or []} >= {"descriptors", "embedding", "confidence"}


@pytest.fixture(scope="module")
def stats_champion(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, object]:
    """A champion registered with reference statistics of held-out product reviews."""
    return register_champion(tmp_path_factory.mktemp("stats-registry"), tiny_model_dir, 20, with_stats=True)


@pytest.mark.parametrize(("drifted", "fires"), [(True, True), (False, False)], ids=["hotels", "products"])
def test_embedding_signal_follows_the_serving_models_view(
    stats_champion: dict[str, object], tmp_path: Path, drifted: bool, fires: bool
) -> None:
    cfg = load_config(
        REPO_ROOT / "configs" / "test.yaml",
        watching(
            stats_champion,
            tmp_path / "state",
            "monitoring.min_labelled_rows=0",
            "monitoring.signals.descriptors.fire=false",
        ),
        base=REPO_ROOT,
    )
    fill_log(cfg, str(stats_champion["version"]), n=200, seed=21, drifted=drifted)
    decision = monitor(cfg, RetrainStarter(), now=T0)
    by_name = {s.name: s for s in decision.signals}
    assert set(by_name) == {
        "descriptors",
        "embedding",
        "confidence",
        "estimated_accuracy",
        "feedback_accuracy",
    }
    embedding = by_name["embedding"]
    assert embedding.value is not None and embedding.fired is fires, embedding.detail
    assert decision.action == ("fired" if fires else "no_drift"), decision.reason
    if fires:
        assert decision.reason.startswith("drift: embedding fired")
    assert by_name["feedback_accuracy"].value is None  # no labelled feedback on this window
