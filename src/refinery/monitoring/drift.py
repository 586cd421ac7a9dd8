"""Drift between the reference profile kept with a model and a window of served predictions.

Both sides are descriptor frames: the numeric text descriptors of
:func:`refinery.monitoring.descriptors.text_descriptors` plus a categorical ``label`` column (training
labels in the reference, predicted labels in the window). Evidently tests each column; the dataset
has drifted when the share of drifted columns reaches ``MonitoringConfig.drift_share``.

The statistical tests are pinned (two-sample Kolmogorov-Smirnov for descriptors, chi-square for the
label) so that ``MonitoringConfig.stattest_threshold`` always means a p-value: a column drifts when
its p-value is below the threshold. Evidently's default would switch to distance measures, with the
opposite reading of the threshold, once the reference grows past 1000 rows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refinery.atomic import staged_file
from refinery.config import MonitoringConfig
from refinery.errors import MonitoringError
from refinery.results import Record

LABEL_COLUMN = "label"
NUMERIC_METHOD = "ks"
CATEGORICAL_METHOD = "chisquare"
REPORT_HTML = "drift_report.html"
RESULT_JSON = "drift.json"


@dataclass(frozen=True)
class ColumnDrift:
    """The drift test of one column.

    Attributes:
        score: The test's p-value (drift when below ``threshold``).
        method: Evidently's name of the test (``ks`` or ``chisquare``).
        threshold: The p-value threshold the test used.
        drifted: Whether Evidently's drift test for the column failed.
        kind: ``numerical`` for a descriptor, ``categorical`` for the label.
    """

    score: float
    method: str
    threshold: float
    drifted: bool
    kind: str


@dataclass(frozen=True)
class DriftResult(Record):
    """The outcome of one drift check, also written as ``drift.json`` next to the HTML report.

    Attributes:
        dataset_drift: Whether ``drifted_share >= drift_share_threshold``.
        drifted_share: Share of tested columns that drifted.
        drifted_columns: Names of the drifted columns, in test order.
        columns: Per-column test results.
        reference_rows: Rows in the reference profile.
        current_rows: Rows in the current window.
        drift_share_threshold: ``MonitoringConfig.drift_share`` used.
        stattest_threshold: ``MonitoringConfig.stattest_threshold`` used.
        report: Path of the self-contained Evidently HTML report.
        ignored_columns: Columns present in only one frame, or not numeric, left out of the test.
    """

    dataset_drift: bool
    drifted_share: float
    drifted_columns: list[str]
    columns: dict[str, ColumnDrift]
    reference_rows: int
    current_rows: int
    drift_share_threshold: float
    stattest_threshold: float
    report: str
    ignored_columns: list[str] = field(default_factory=list)


def _numeric_columns(frame: pd.DataFrame) -> list[str]:
    return [
        str(c)
        for c in frame.columns
        if c != LABEL_COLUMN
        and pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
    ]


def _check_frame(frame: Any, side: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise MonitoringError(f"{side} descriptors must be a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        what = (
            "current window is empty: no predictions" if side == "current" else "reference profile is empty"
        )
        raise MonitoringError(f"{what} to test for drift")
    if LABEL_COLUMN not in frame.columns:
        raise MonitoringError(
            f"{side} descriptors have no '{LABEL_COLUMN}' column (columns: {', '.join(map(str, frame.columns))})"
        )
    missing = int(frame[LABEL_COLUMN].isna().sum())
    if missing:
        raise MonitoringError(f"{side} descriptors: column '{LABEL_COLUMN}' has {missing} missing value(s)")


def _prepare(frame: pd.DataFrame, numeric: list[str], side: str) -> pd.DataFrame:
    out = frame[numeric].astype("float64").replace([np.inf, -np.inf], np.nan)
    for column in numeric:
        if out[column].isna().all():
            raise MonitoringError(f"{side} descriptors: column '{column}' has no finite values to test")
    out[LABEL_COLUMN] = frame[LABEL_COLUMN].astype(str).to_numpy()
    return out.reset_index(drop=True)


def _status_failed(status: Any) -> bool:
    value = getattr(status, "value", status)
    if value not in ("SUCCESS", "FAIL", "WARNING"):
        raise MonitoringError(f"Evidently drift test ended with status {value!r}")
    return value != "SUCCESS"


def _parse_snapshot(snapshot: dict[str, Any], columns: list[str]) -> tuple[float, dict[str, ColumnDrift]]:
    share: float | None = None
    scores: dict[str, tuple[float, str, float]] = {}
    for metric in snapshot["metrics"]:
        config = metric["config"]
        kind = config.get("type", "")
        if kind.endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif kind.endswith("ValueDrift"):
            scores[config["column"]] = (
                float(metric["value"]),
                str(config["method"]),
                float(config["threshold"]),
            )
    drifted: dict[str, bool] = {}
    for test in snapshot.get("tests", []):
        params = test["metric_config"]["params"]
        if params.get("type", "").endswith("ValueDrift"):
            drifted[params["column"]] = _status_failed(test["status"])
    missing = [c for c in columns if c not in scores or c not in drifted]
    if share is None or missing:
        raise MonitoringError(
            "Evidently report lacks drift results for "
            + (", ".join(missing) if missing else "the drifted-columns share")
        )
    result = {
        c: ColumnDrift(
            score=scores[c][0],
            method=scores[c][1],
            threshold=scores[c][2],
            drifted=drifted[c],
            kind="categorical" if c == LABEL_COLUMN else "numerical",
        )
        for c in columns
    }
    return share, result


def _save_html(snapshot: Any, path: Path) -> None:
    with staged_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        # Snapshot.save_html silently writes nothing when handed a file object (evidently 0.7.23).
        fh.write(snapshot.get_html_str(as_iframe=False))


def detect_drift(
    reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitoringConfig, out_dir: Path
) -> DriftResult:
    """Test a window of descriptors against the reference profile with Evidently.

    Every numeric column the two frames share is tested with two-sample K-S, the ``label`` column with
    chi-square; a column drifts when its p-value is below ``cfg.stattest_threshold``. Columns present
    in only one frame are left out and listed in ``ignored_columns``.

    Args:
        reference: The reference descriptors kept with the model (training texts and labels).
        current: Descriptors of the current window (served texts and predicted labels).
        cfg: Monitoring settings (``stattest_threshold``, ``drift_share``).
        out_dir: Folder that receives ``drift_report.html`` (self-contained) and ``drift.json``.

    Returns:
        The drift result, also written to ``out_dir/drift.json``.

    Raises:
        MonitoringError: A frame is empty, lacks the ``label`` column or has missing labels, the frames
            share no numeric descriptor, a descriptor has no finite value, or Evidently fails.
    """
    _check_frame(reference, "reference")
    _check_frame(current, "current")
    ref_numeric, cur_numeric = _numeric_columns(reference), _numeric_columns(current)
    numeric = [c for c in ref_numeric if c in cur_numeric]
    if not numeric:
        raise MonitoringError(
            "reference and current descriptors share no numeric column "
            f"(reference: {', '.join(ref_numeric) or 'none'}; current: {', '.join(cur_numeric) or 'none'})"
        )
    ignored = sorted(
        ({str(c) for c in reference.columns} | {str(c) for c in current.columns}) - {*numeric, LABEL_COLUMN}
    )
    ref = _prepare(reference, numeric, "reference")
    cur = _prepare(current, numeric, "current")
    columns = [*numeric, LABEL_COLUMN]

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=[LABEL_COLUMN])
    preset = DataDriftPreset(
        columns=columns,
        drift_share=cfg.drift_share,
        threshold=cfg.stattest_threshold,
        num_method=NUMERIC_METHOD,
        cat_method=CATEGORICAL_METHOD,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / REPORT_HTML
    try:
        # Constant descriptors (e.g. no question marks anywhere) make numpy warn while Evidently
        # builds its correlation widgets; the tests themselves are unaffected.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            snapshot = Report([preset], include_tests=True).run(
                reference_data=Dataset.from_pandas(ref, data_definition=definition),
                current_data=Dataset.from_pandas(cur, data_definition=definition),
            )
            share, per_column = _parse_snapshot(snapshot.dict(), columns)
            _save_html(snapshot, html_path)
    except MonitoringError:
        raise
    except Exception as exc:
        raise MonitoringError(
            f"Evidently drift report failed for {out_dir}: {type(exc).__name__}: {exc}"
        ) from exc

    result = DriftResult(
        dataset_drift=share >= cfg.drift_share,
        drifted_share=share,
        drifted_columns=[c for c in columns if per_column[c].drifted],
        columns=per_column,
        reference_rows=len(ref),
        current_rows=len(cur),
        drift_share_threshold=cfg.drift_share,
        stattest_threshold=cfg.stattest_threshold,
        report=str(html_path),
        ignored_columns=ignored,
    )
    result.write_json(out_dir / RESULT_JSON)
    return result
