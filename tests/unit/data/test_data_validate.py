"""validate_data with the real Great Expectations: a clean dataset passes; each broken input fails with a
message naming the expectation and column; the reports are always written."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from refinery.config import RunConfig, parse_config, resolve
from refinery.data.validate import ValidationReport, validate_data
from refinery.errors import DataError, DataValidationError


def run_config(tmp_path: Path, uri: Path, **data: object) -> RunConfig:
    tree = {
        "state_dir": str(tmp_path / "state"),
        "data": {"uri": str(uri), "labels": ["negative", "positive"], "min_rows_per_class": 20, **data},
        "model": {"base": str(tmp_path / "model")},
    }
    return resolve(parse_config(tree), tmp_path)


def validate_csv(tmp_path: Path, frame: pd.DataFrame, **data: object) -> tuple[ValidationReport, Path]:
    path = tmp_path / "reviews.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "validation"
    return validate_data(run_config(tmp_path, path, **data), out), out


def assert_reports_written(out: Path, success: bool) -> dict:
    summary = json.loads((out / "validation.json").read_text())
    assert summary["success"] is success
    assert summary["great_expectations"]["success"] is success
    assert summary["great_expectations"]["results"], "the GX result JSON is kept"
    assert (out / "data_docs" / "index.html").is_file()
    assert list((out / "data_docs" / "validations").rglob("*.html"))
    report = (out / "report.md").read_text()
    assert ("PASSED" if success else "FAILED") in report
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no staging folders left behind"
    return summary


def test_clean_data_passes_and_writes_reports(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    report, out = validate_csv(tmp_path, demo_df)
    assert report.success, report.failures
    assert report.row_count == len(demo_df)
    assert report.failures == [] and report.skipped == []
    assert report.statistics["unsuccessful_expectations"] == 0
    assert report.statistics["evaluated_expectations"] == 8
    assert report.label_counts == demo_df["label"].value_counts().sort_index().to_dict()
    report.raise_for_failure()
    summary = assert_reports_written(out, success=True)
    assert ValidationReport.read(out / "validation.json") == report
    assert summary["paths"]["data_docs"] == str(out / "data_docs" / "index.html")

    # Validating again into the same folder replaces the reports, from an already-read frame too.
    broken = demo_df.assign(label=demo_df["label"].where(demo_df.index > 2, "neutral"))
    again = validate_data(run_config(tmp_path, tmp_path / "reviews.csv"), out, frame=broken)
    assert not again.success
    assert_reports_written(out, success=False)


def test_unknown_labels(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    frame = demo_df.copy()
    frame.loc[[3, 4, 9], "label"] = ["neutral", "neutral", "Positive"]
    report, out = validate_csv(tmp_path, frame)
    assert not report.success
    [failure] = report.failures
    assert (failure.expectation, failure.column, failure.observed) == (
        "expect_column_values_to_be_in_set",
        "label",
        3,
    )
    assert failure.examples == ["'neutral'", "'Positive'"]
    with pytest.raises(DataValidationError) as err:
        report.raise_for_failure()
    assert str(err.value) == (
        f"data validation failed for {tmp_path / 'reviews.csv'}: expect_column_values_to_be_in_set(label): "
        "3 rows with labels outside {negative, positive}: ['neutral', 'Positive']"
    )
    report_md = (out / "report.md").read_text()
    assert (
        "| `expect_column_values_to_be_in_set` | `label` | 3 | every value in {negative, positive} |"
        in report_md
    )
    assert_reports_written(out, success=False)


def test_missing_and_blank_texts_and_missing_labels(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    frame = demo_df.copy()
    frame.loc[0, "text"] = None
    frame.loc[[5, 6], "text"] = ["   ", "\t \n"]
    frame.loc[7, "label"] = None
    report, out = validate_csv(tmp_path, frame)
    by_name = {(f.expectation, f.column): f for f in report.failures}
    assert set(by_name) == {
        ("expect_column_values_to_not_be_null", "text"),
        ("expect_column_values_to_not_match_regex", "text"),
        ("expect_column_values_to_not_be_null", "label"),
    }
    assert by_name["expect_column_values_to_not_be_null", "text"].examples == ["row 1"]
    blank = by_name["expect_column_values_to_not_match_regex", "text"]
    assert blank.observed == 2 and blank.examples[0] == "row 6: '   '"
    with pytest.raises(
        DataValidationError, match=r"expect_column_values_to_not_match_regex\(text\): 2 rows with blank"
    ):
        report.raise_for_failure()
    assert "row 8" in (out / "report.md").read_text()


def test_too_few_rows_per_class(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    frame = pd.concat(
        [demo_df[demo_df["label"] == "negative"].head(30), demo_df[demo_df["label"] == "positive"].head(4)]
    )
    report, _ = validate_csv(tmp_path, frame)
    [failure] = report.failures
    assert failure.expectation == "expect_table_row_count_to_be_between"
    assert (failure.column, failure.observed, failure.threshold) == ("label", 4, ">= 20 rows")
    with pytest.raises(
        DataValidationError,
        match=r"expect_table_row_count_to_be_between\(label\): label 'positive' has 4 rows, needs at least 20",
    ):
        report.raise_for_failure()


def test_missing_column_is_reported_and_its_checks_skipped(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    report, out = validate_csv(tmp_path, demo_df.rename(columns={"text": "review"}))
    assert not report.success
    first = report.failures[0]
    assert (first.expectation, first.column, first.observed) == ("expect_column_to_exist", "text", "missing")
    assert "data.text_column" in first.message and "'review'" in first.message
    assert report.skipped == [
        "expect_column_values_to_not_be_null(text)",
        "expect_column_values_to_not_match_regex(text)",
    ]
    with pytest.raises(DataValidationError, match=r"expect_column_to_exist\(text\): column 'text'"):
        report.raise_for_failure()
    assert_reports_written(out, success=False)
    assert "Skipped expectations" in (out / "report.md").read_text()

    # The configured column names are what is checked.
    renamed, _ = validate_csv(tmp_path, demo_df.rename(columns={"text": "review"}), text_column="review")
    assert renamed.success


def test_header_only_file_fails_min_rows(tmp_path: Path) -> None:
    report, out = validate_csv(tmp_path, pd.DataFrame({"text": [], "label": []}))
    assert report.row_count == 0
    assert [f.expectation for f in report.failures] == ["expect_table_row_count_to_be_between"] * 2
    assert_reports_written(out, success=False)


def test_unreadable_input_raises_data_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "validation"
    with pytest.raises(DataError, match=r"not found: .*missing\.csv"):
        validate_data(run_config(tmp_path, tmp_path / "missing.csv"), out)
    assert not out.exists()


def test_a_failure_while_writing_leaves_no_partial_reports(
    tmp_path: Path, demo_df: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: ValidationReport) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(ValidationReport, "to_markdown", broken)
    with pytest.raises(OSError, match="disk full"):
        validate_csv(tmp_path, demo_df.head(50))
    assert list((tmp_path / "validation").iterdir()) == []
