"""validate_data with the real Great Expectations: a clean dataset passes; warnings are reported but do
not stop the run; errors name the rule, the observed value, the threshold and the offending rows; the
reports (GX JSON, Data Docs, self-contained HTML, Markdown) are always written together."""

from __future__ import annotations

import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from refinery.config import RunConfig, parse_config, resolve
from refinery.data.validate import ValidationReport, validate_data
from refinery.errors import DataError, DataValidationError


def run_config(tmp_path: Path, uri: Path | str, **data: object) -> RunConfig:
    tree = {
        "state_dir": str(tmp_path / "state"),
        "data": {"uri": str(uri), "labels": ["negative", "positive"], **data},
        "model": {"base": str(tmp_path / "model")},
    }
    return resolve(parse_config(tree), tmp_path)


def validate_csv(tmp_path: Path, frame: pd.DataFrame, **data: object) -> tuple[ValidationReport, Path]:
    path = tmp_path / "reviews.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "validation"
    return validate_data(run_config(tmp_path, path, **data), out), out


def _not_json(constant: str) -> None:
    raise AssertionError(f"validation.json holds {constant}, which is not JSON")


def assert_reports_written(out: Path, success: bool) -> dict:
    summary = json.loads((out / "validation.json").read_text(), parse_constant=_not_json)
    assert summary["success"] is success
    assert summary["great_expectations"]["results"], "the GX result JSON is kept"
    assert (out / "data_docs" / "index.html").is_file()
    assert list((out / "data_docs" / "validations").rglob("*.html"))
    status = "PASSED" if success else "FAILED"
    assert status in (out / "report.md").read_text()
    assert status in (out / "report.html").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no staging folders left behind"
    return summary


class _ExternalReferences(HTMLParser):
    """Every reference in an HTML page that would make a browser fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.in_style = False

    def handle_endtag(self, tag: str) -> None:
        self.in_style = self.in_style and tag != "style"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.in_style = self.in_style or tag == "style"
        if tag in ("script", "iframe", "object", "embed"):
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action") and value:
                self.found.append(f"{tag} {name}={value}")
            if name == "style" and value and "url(" in value:
                self.found.append(f"{tag} style url()")

    def handle_data(self, data: str) -> None:
        # Text that merely mentions a URL fetches nothing; a stylesheet can.
        if self.in_style and re.search(r"@import|url\(", data):
            self.found.append("<style> with @import or url()")


def external_references(html: str) -> list[str]:
    parser = _ExternalReferences()
    parser.feed(html)
    return parser.found


def test_clean_data_passes_and_writes_every_report(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    report, out = validate_csv(tmp_path, demo_df)
    assert report.success, report.failures
    assert report.failures == [] and report.warnings == [] and report.skipped == []
    assert report.row_count == len(demo_df)
    assert set(report.passed) >= {"columns", "labels", "missing_text", "exact_duplicates", "leakage"} - {
        "leakage"
    }
    assert report.statistics["unsuccessful_expectations"] == 0
    assert report.label_counts == demo_df["label"].value_counts().sort_index().to_dict()
    report.raise_for_failure()
    summary = assert_reports_written(out, success=True)
    assert ValidationReport.read(out / "validation.json") == report
    assert summary["paths"]["html"] == str(out / "report.html")
    severities = {r["expectation_config"]["severity"] for r in summary["great_expectations"]["results"]}
    assert severities == {"critical", "warning"}, "each expectation carries its severity in the GX result"

    # Validating again into the same folder replaces the reports, from an already-read frame too.
    broken = demo_df.assign(label=demo_df["label"].where(demo_df.index > 2, "neutral"))
    again = validate_data(run_config(tmp_path, tmp_path / "reviews.csv"), out, frame=broken)
    assert not again.success
    assert_reports_written(out, success=False)


def test_warnings_alone_pass_and_appear_in_every_report(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    frame = demo_df.assign(source="shop")
    frame.loc[[10, 11], "text"] = ["Great  value!", "great value"]
    frame.loc[[10, 11], "label"] = ["positive", "negative"]
    report, out = validate_csv(tmp_path, frame)
    assert report.success and report.failures == []
    assert [w.check for w in report.warnings] == ["extra_columns", "conflicting_labels"]
    conflict = report.warnings[-1]
    assert conflict.observed == 2 and conflict.severity == "warning"
    assert [(r.row, r.text, r.value) for r in conflict.rows] == [
        (11, "Great  value!", "labelled negative | positive"),
        (12, "great value", "labelled negative | positive"),
    ]
    report.raise_for_failure()  # warnings do not stop the run
    summary = assert_reports_written(out, success=True)
    assert [w["check"] for w in summary["warnings"]] == ["extra_columns", "conflicting_labels"]
    for name in ("report.md", "report.html"):
        page = unescape((out / name).read_text())
        assert "PASSED with warnings" in page
        assert "conflicting_labels" in page and "great value" in page and "['source']" in page


def test_html_report_is_self_contained_and_shows_the_failures(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    frame = demo_df.copy()
    frame.loc[3, "text"] = "<script src='https://cdn.example/x.js'></script> fine"
    frame.loc[[3, 9], "label"] = "neutral"
    _, out = validate_csv(tmp_path, frame)
    html = (out / "report.html").read_text()
    assert external_references(html) == []
    assert "labels outside {negative, positive}" in html and "neutral" in html
    assert "&lt;script src=&#x27;https://cdn.example/x.js&#x27;&gt;" in html, "data is escaped, never markup"
    # The check is not vacuous: the stock Data Docs page loads its styles and scripts from CDNs.
    assert external_references((out / "data_docs" / "index.html").read_text())


def test_errors_name_rule_observed_threshold_and_rows(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    frame = demo_df.copy()
    frame.loc[[3, 4, 9], "label"] = ["neutral", "neutral", "Positive"]
    frame.loc[0, "text"] = None
    frame.loc[[5, 6], "text"] = ["   ", "\t \n"]
    report, out = validate_csv(tmp_path, frame)
    assert not report.success
    by_check = {f.check: f for f in report.failures}
    assert list(by_check) == ["missing_text", "labels"]
    missing = by_check["missing_text"]
    assert (missing.column, missing.observed, missing.threshold) == ("text", 3, "<= 0.00% of rows")
    assert [r.row for r in missing.rows] == [1, 6, 7]
    labels = by_check["labels"]
    assert labels.expectation == "expect_column_values_to_be_in_set"
    assert (labels.observed, [r.row for r in labels.rows]) == (3, [4, 5, 10])
    assert [r.value for r in labels.rows] == ["neutral", "neutral", "Positive"]
    assert labels.rows[0].text == demo_df.loc[3, "text"]
    with pytest.raises(DataValidationError) as err:
        report.raise_for_failure()
    assert str(err.value).startswith(f"data validation failed for {tmp_path / 'reviews.csv'}: missing_text (")
    assert "labels (expect_column_values_to_be_in_set on label): 3 rows (0.50%) with labels outside" in str(
        err.value
    )
    markdown = (out / "report.md").read_text()
    assert "| `labels` | error | `label` | 3 | every value in {negative, positive} |" in markdown
    assert "| row 4 |" in markdown


def test_at_most_ten_offending_rows_are_listed(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    report, _ = validate_csv(
        tmp_path, demo_df.assign(label=demo_df["label"].where(demo_df.index % 2 == 1, "meh"))
    )
    [labels] = [f for f in report.failures if f.check == "labels"]
    assert labels.observed == 300
    assert [r.row for r in labels.rows] == list(range(1, 21, 2))


def test_severity_off_leaves_a_rule_out_and_thresholds_are_configurable(
    tmp_path: Path, demo_df: pd.DataFrame
) -> None:
    frame = pd.concat([demo_df, demo_df.head(100)])  # 100 exact duplicates: 14% of rows
    allowed, _ = validate_csv(tmp_path, frame)
    assert allowed.success, "the default allows up to 20% exact duplicates"
    strict, _ = validate_csv(tmp_path, frame, validation={"exact_duplicates": {"max_share": 0.1}})
    [dupes] = strict.failures
    assert (dupes.check, dupes.observed, dupes.threshold) == ("exact_duplicates", 100, "<= 10.00% of rows")
    assert dupes.rows[0].row == 601 and dupes.rows[0].value == "same text as row 1"
    off, _ = validate_csv(
        tmp_path,
        frame,
        validation={
            "exact_duplicates": {"severity": "off", "max_share": 0.1},
            "normalised_duplicates": {"severity": "off"},
        },
    )
    assert off.success and "exact_duplicates" not in off.passed


def test_leakage_across_given_splits_names_the_file_rows(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    train, validation, test = demo_df.iloc[:400], demo_df.iloc[400:500], demo_df.iloc[500:]
    leaked_test = pd.concat(
        [test, train.iloc[[7]].assign(text=lambda d: d["text"].str.upper()), validation.iloc[[2]]]
    )
    for name, part in (("validation", validation), ("test", leaked_test)):
        part.to_csv(tmp_path / f"{name}.csv", index=False)
    report, out = validate_csv(
        tmp_path, train, validation_uri=str(tmp_path / "validation.csv"), test_uri=str(tmp_path / "test.csv")
    )
    assert set(report.files) == {"train", "validation", "test"}
    assert report.row_count == 602
    [leak] = report.failures
    assert leak.check == "leakage" and leak.observed == 2
    assert [(r.split, r.row, r.value) for r in leak.rows] == [
        ("test", 101, "also in train"),
        ("test", 102, "also in validation"),
    ]
    assert "test row 101" in (out / "report.md").read_text()


def test_missing_column_is_reported_and_its_rules_skipped(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    report, out = validate_csv(tmp_path, demo_df.rename(columns={"text": "review"}))
    assert not report.success
    first = report.failures[0]
    assert (first.check, first.column, first.observed) == ("columns", "text", "missing")
    assert "data.text_column" in first.message and "'review'" in first.message
    assert "missing_text" in report.skipped and "alphabetic" in report.skipped
    with pytest.raises(
        DataValidationError, match=r"columns \(expect_column_to_exist on text\): column 'text'"
    ):
        report.raise_for_failure()
    assert_reports_written(out, success=False)
    assert "Skipped rules" in (out / "report.md").read_text()

    # The configured column names are what is checked.
    renamed, _ = validate_csv(tmp_path, demo_df.rename(columns={"text": "review"}), text_column="review")
    assert renamed.success


def test_single_class_data_fails_with_strict_json_reports(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    report, out = validate_csv(tmp_path, demo_df[demo_df["label"] == "positive"])
    checks = [(f.check, f.observed) for f in report.failures]
    assert checks == [("min_rows_per_class", {"negative": 0})]
    assert [(w.check, w.observed) for w in report.warnings] == [("class_imbalance", "no rows")]
    assert_reports_written(out, success=False)


def test_group_column_must_exist_and_be_filled(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    frame = demo_df.assign(author=[f"a{i % 50}" if i % 100 else None for i in range(len(demo_df))])
    report, _ = validate_csv(tmp_path, frame, group_column="author")
    assert [(f.check, f.observed) for f in report.failures] == [("group", 6)]
    absent, _ = validate_csv(tmp_path, demo_df, group_column="author")
    assert absent.failures[0].check == "columns" and "data.group_column" in absent.failures[0].message


def test_unreadable_input_raises_data_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "validation"
    with pytest.raises(DataError, match=r"not found: .*missing\.csv"):
        validate_data(run_config(tmp_path, tmp_path / "missing.csv"), out)
    assert not out.exists()


def test_memory_uri_is_validated(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    import fsspec

    with fsspec.open("memory://refinery-test/reviews.csv", "w") as fh:
        demo_df.to_csv(fh, index=False)
    report = validate_data(run_config(tmp_path, "memory://refinery-test/reviews.csv"), tmp_path / "v")
    assert report.success and report.files == {"train": "memory://refinery-test/reviews.csv"}


def test_a_failure_while_writing_leaves_no_partial_reports(
    tmp_path: Path, demo_df: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: ValidationReport) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(ValidationReport, "to_html", broken)
    with pytest.raises(OSError, match="disk full"):
        validate_csv(tmp_path, demo_df.head(150))
    assert list((tmp_path / "validation").iterdir()) == []


def test_slice_columns_are_expected_and_required(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    frame = demo_df.assign(category="phones")
    for name in ("with", "without"):
        (tmp_path / name).mkdir()
    report, _ = validate_csv(tmp_path / "with", frame, slice_columns=["category"])
    assert report.success and report.warnings == []  # not an unexpected column
    report, _ = validate_csv(tmp_path / "without", demo_df, slice_columns=["category"])
    assert not report.success
    (missing,) = [f for f in report.failures if f.check == "columns"]
    assert "column 'category' (data.slice_columns) is missing" in missing.message
