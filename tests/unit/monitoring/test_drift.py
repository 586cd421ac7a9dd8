"""detect_drift on synthetic descriptor frames, with Evidently running for real."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from refinery.config import MonitoringConfig
from refinery.errors import MonitoringError
from refinery.monitoring.descriptors import DESCRIPTOR_COLUMNS
from refinery.monitoring.drift import REPORT_HTML, RESULT_JSON, DriftResult, detect_drift

DESCRIPTORS = tuple(DESCRIPTOR_COLUMNS)


def descriptor_frame(
    n: int, seed: int, *, length_shift: float = 0.0, positive_share: float = 0.5, label: bool = True
) -> pd.DataFrame:
    """Descriptor rows shaped like text_descriptors' output: short reviews, some punctuation, few digits."""
    rng = np.random.default_rng(seed)
    words = rng.poisson(14 + length_shift / 5.5, n).clip(1)
    mean_len = rng.normal(4.6, 0.4, n).clip(2)
    frame = pd.DataFrame(
        {
            "text_length": (words * (mean_len + 1)).round().astype("int64"),
            "word_count": words.astype("int64"),
            "mean_word_length": mean_len,
            "non_alpha_share": rng.beta(2, 40, n),
            "uppercase_share": rng.beta(2, 30, n),
            "digit_share": np.where(rng.random(n) < 0.05, rng.uniform(0.01, 0.05, n), 0.0),
            "exclamation_count": rng.poisson(0.3, n).astype("int64"),
            "question_count": np.zeros(n, dtype="int64"),
        }
    )
    if label:
        frame["label"] = np.where(rng.random(n) < positive_share, "positive", "negative")
    return frame


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return descriptor_frame(400, seed=0)


def test_same_distribution_is_not_drift(reference: pd.DataFrame, tmp_path: Path) -> None:
    cfg = MonitoringConfig()
    result = detect_drift(reference, descriptor_frame(200, seed=1), cfg, tmp_path)

    assert result.dataset_drift is False
    assert result.drifted_share < cfg.drift_share
    assert set(result.columns) == {*DESCRIPTORS, "label"}
    assert result.reference_rows == 400
    assert result.current_rows == 200
    assert all(col.method == "ks" for name, col in result.columns.items() if name != "label")
    assert result.columns["label"].method == "chisquare"
    assert result.columns["label"].kind == "categorical"
    assert (tmp_path / REPORT_HTML).is_file()
    assert (tmp_path / RESULT_JSON).is_file()


def test_shifted_lengths_and_label_mix_is_drift(reference: pd.DataFrame, tmp_path: Path) -> None:
    cfg = MonitoringConfig(stattest_threshold=0.05, drift_share=0.3)
    current = descriptor_frame(200, seed=2, length_shift=60, positive_share=0.85)
    out_dir = tmp_path / "report"
    result = detect_drift(reference, current, cfg, out_dir)

    assert result.dataset_drift is True
    assert {"text_length", "word_count", "label"} <= set(result.drifted_columns)
    assert result.drifted_share == pytest.approx(len(result.drifted_columns) / len(result.columns))
    assert result.drifted_share >= cfg.drift_share
    for name in ("text_length", "word_count", "label"):
        column = result.columns[name]
        assert column.drifted and column.score < cfg.stattest_threshold
        assert column.threshold == cfg.stattest_threshold
    # Zero everywhere on both sides: nothing to see.
    assert result.columns["question_count"].drifted is False

    html_path = out_dir / REPORT_HTML
    assert result.report == str(html_path)
    html = html_path.read_text(encoding="utf-8")
    assert len(html) > 100_000, "the report inlines its scripts"
    assert not re.search(r"<script[^>]+src=[\"']?https?://", html, re.IGNORECASE)
    assert not re.search(r"<link[^>]+href=[\"']?https?://", html, re.IGNORECASE)
    assert "text_length" in html

    written = json.loads((out_dir / RESULT_JSON).read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(result.to_dict()))
    assert written["dataset_drift"] is True
    assert written["drifted_columns"] == result.drifted_columns
    assert written["columns"]["label"] == {
        "score": result.columns["label"].score,
        "method": "chisquare",
        "threshold": 0.05,
        "drifted": True,
        "kind": "categorical",
    }
    assert written["reference_rows"] == 400 and written["current_rows"] == 200
    assert DriftResult.from_dict(written) == result
    assert not [p.name for p in out_dir.iterdir() if p.name.endswith(".tmp")]


def test_label_shift_alone_drifts_one_column_not_the_dataset(reference: pd.DataFrame, tmp_path: Path) -> None:
    current = descriptor_frame(200, seed=3, positive_share=0.95)
    result = detect_drift(reference, current, MonitoringConfig(drift_share=0.5), tmp_path)

    assert result.columns["label"].drifted is True
    assert result.dataset_drift is False
    assert result.drifted_share < 0.5


def test_only_common_numeric_columns_are_tested(reference: pd.DataFrame, tmp_path: Path) -> None:
    current = descriptor_frame(150, seed=4).drop(columns=["digit_share", "question_count"])
    current["text"] = "a served text"  # raw text in the window is not a descriptor
    # prepare_data stores the reference label as pandas' string dtype.
    ref = reference.assign(sentence_count=1).astype({"label": "string"})
    result = detect_drift(ref, current, MonitoringConfig(), tmp_path)

    assert set(result.columns) == {*DESCRIPTORS, "label"} - {"digit_share", "question_count"}
    assert result.ignored_columns == ["digit_share", "question_count", "sentence_count", "text"]


def test_predicted_label_outside_the_reference_is_drift(reference: pd.DataFrame, tmp_path: Path) -> None:
    current = descriptor_frame(120, seed=5)
    current["label"] = ["neutral", "positive", "negative"] * 40
    result = detect_drift(reference, current, MonitoringConfig(), tmp_path)

    assert result.columns["label"].drifted is True


def _broken_cases() -> list[tuple[str, pd.DataFrame | None, pd.DataFrame | None, str]]:
    ref = descriptor_frame(100, seed=10)
    cur = descriptor_frame(100, seed=11)
    nan_column = cur.copy()
    nan_column["mean_word_length"] = np.nan
    null_label = cur.copy()
    null_label.loc[3, "label"] = None
    return [
        ("empty window", None, cur.iloc[0:0], "current window is empty"),
        ("empty reference", ref.iloc[0:0], None, "reference profile is empty"),
        (
            "no label in window",
            None,
            cur.drop(columns=["label"]),
            "current descriptors have no 'label' column",
        ),
        (
            "no label in reference",
            ref.drop(columns=["label"]),
            None,
            "reference descriptors have no 'label' column",
        ),
        ("null label", None, null_label, "column 'label' has 1 missing value"),
        ("no shared descriptor", None, cur[["label"]], "share no numeric column"),
        (
            "all-NaN descriptor",
            None,
            nan_column,
            "current descriptors: column 'mean_word_length' has no finite",
        ),
    ]


@pytest.mark.parametrize(
    ("reference_frame", "current_frame", "message"),
    [case[1:] for case in _broken_cases()],
    ids=[case[0] for case in _broken_cases()],
)
def test_broken_inputs_raise_and_write_nothing(
    reference: pd.DataFrame,
    reference_frame: pd.DataFrame | None,
    current_frame: pd.DataFrame | None,
    message: str,
    tmp_path: Path,
) -> None:
    ref = reference if reference_frame is None else reference_frame
    cur = descriptor_frame(100, seed=12) if current_frame is None else current_frame
    out_dir = tmp_path / "report"

    with pytest.raises(MonitoringError, match=re.escape(message)):
        detect_drift(ref, cur, MonitoringConfig(), out_dir)
    assert not out_dir.exists()
