"""The corpus of broken training data: every kind of bad input the data contract must stop.

Each :class:`BrokenDataset` writes its files from the clean generated reviews and says how validation
must end: ``unusable`` (the input cannot be read: ``refinery validate`` exits 2, the pipeline's
validate_data step fails with a DataError) or ``invalid`` (it reads, but an ``error`` rule fails: exit 1,
the step fails with a DataValidationError naming the rule). ``message`` is a regular expression the
error must match. The unit tests validate every case; the integration tests run the pipeline on each.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class BrokenDataset:
    """One kind of broken data.

    Attributes:
        id: Short name (the pytest id).
        write: Writes the data under a folder from the clean reviews; returns the training file.
        outcome: ``unusable`` or ``invalid``.
        message: Regular expression the error message must match.
        check: For ``invalid``: the rule that fails (others may fail too).
        overrides: Further ``--set`` overrides (a stricter contract, a held-out file).
    """

    id: str
    write: Callable[[Path, pd.DataFrame], Path]
    outcome: str
    message: str
    check: str | None = None
    overrides: Callable[[Path], list[str]] = field(default=lambda _: [])


def _csv(folder: Path, frame: pd.DataFrame, name: str = "reviews.csv") -> Path:
    path = folder / name
    frame.to_csv(path, index=False)
    return path


def _raw(folder: Path, content: bytes, name: str = "reviews.csv") -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


def _latin1(folder: Path, df: pd.DataFrame) -> Path:
    frame = df.copy()
    frame.loc[40, "text"] = "Le café était très bon."
    return _raw(folder, frame.to_csv(index=False).encode("latin-1"))


def _semicolons(folder: Path, df: pd.DataFrame) -> Path:
    return _raw(folder, df.to_csv(index=False, sep=";").encode())


def _unterminated_quote(folder: Path, df: pd.DataFrame) -> Path:
    text = df.to_csv(index=False) + '"This last review opens a quote and never closes it,positive\n'
    return _raw(folder, text.encode())


def _corrupt_parquet(folder: Path, df: pd.DataFrame) -> Path:
    whole = folder / "whole.parquet"
    df.to_parquet(whole)
    return _raw(folder, whole.read_bytes()[:200], "reviews.parquet")


def _truncated_gzip(folder: Path, df: pd.DataFrame) -> Path:
    return _raw(folder, gzip.compress(df.to_csv(index=False).encode())[:300], "reviews.csv.gz")


def _numbers_as_text(folder: Path, df: pd.DataFrame) -> Path:
    path = folder / "reviews.jsonl"
    records = df.to_dict("records")
    for i in range(0, len(records), 50):
        records[i]["text"] = 1000 + i
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _with(column: str, every: int, value: object) -> Callable[[Path, pd.DataFrame], Path]:
    def write(folder: Path, df: pd.DataFrame) -> Path:
        frame = df.copy()
        frame[column] = frame[column].astype(object)
        frame.loc[frame.index % every == 0, column] = value
        return _csv(folder, frame)

    return write


def _held_out_copy(folder: Path, df: pd.DataFrame) -> Path:
    _csv(folder, df.iloc[:25], "test.csv")
    return _csv(folder, df)


def _embedded_newlines(folder: Path, df: pd.DataFrame) -> Path:
    """Quoted fields with newlines are valid CSV; here they also hide control characters."""
    frame = df.copy()
    frame.loc[::30, "text"] = frame.loc[::30, "text"] + "\nsecond line\x0b with a vertical tab"
    return _csv(folder, frame)


CORPUS: list[BrokenDataset] = [
    # Unusable input: it cannot be read, so nothing can be checked.
    BrokenDataset(
        "missing-file", lambda f, df: f / "nowhere.csv", "unusable", r"data file not found: .*nowhere\.csv"
    ),
    BrokenDataset(
        "empty-file",
        lambda f, df: _raw(f, b""),
        "unusable",
        r"data file is empty \(0 bytes\): .*reviews\.csv",
    ),
    BrokenDataset(
        "whitespace-only",
        lambda f, df: _raw(f, b"\n \n\n"),
        "unusable",
        r"reviews\.csv holds no CSV header or rows",
    ),
    BrokenDataset(
        "wrong-encoding",
        _latin1,
        "unusable",
        r"reviews\.csv is not valid utf-8: byte\(s\) e9 at offset \d+ \(line 42\)",
    ),
    BrokenDataset(
        "wrong-delimiter", _semicolons, "unusable", r"reviews\.csv looks semicolon-delimited, not CSV"
    ),
    BrokenDataset(
        "unterminated-quote",
        _unterminated_quote,
        "unusable",
        r"cannot parse .*reviews\.csv as CSV: .*EOF inside string starting at row 601",
    ),
    BrokenDataset(
        "corrupt-parquet", _corrupt_parquet, "unusable", r"cannot read .*reviews\.parquet as Parquet"
    ),
    BrokenDataset("truncated-gzip", _truncated_gzip, "unusable", r"cannot read data file .*reviews\.csv\.gz"),
    # Readable but invalid: an error rule of the contract fails.
    BrokenDataset(
        "header-only",
        lambda f, df: _raw(f, b"text,label\n"),
        "invalid",
        r"the data has 0 rows, needs at least 100",
        "min_rows",
    ),
    BrokenDataset(
        "missing-label-column",
        lambda f, df: _csv(f, df.drop(columns=["label"])),
        "invalid",
        r"column 'label' \(data.label_column\) is missing",
        "columns",
    ),
    BrokenDataset(
        "labels-as-floats",
        lambda f, df: _csv(f, df.assign(label=(df["label"] == "positive").astype(float))),
        "invalid",
        r"600 rows \(100.00%\) with labels outside \{0, 1\}.*'0\.0'.*numbers written as floats",
        "labels",
        lambda f: ["data.labels=[0,1]"],
    ),
    BrokenDataset(
        "undeclared-label",
        _with("label", 7, "neutral"),
        "invalid",
        r"86 rows .* labels outside \{negative, positive\}.*'neutral'",
        "labels",
    ),
    BrokenDataset(
        "missing-labels", _with("label", 9, None), "invalid", r"67 rows \(11.17%\) with no 'label'", "labels"
    ),
    BrokenDataset(
        "blank-texts",
        _with("text", 5, "   "),
        "invalid",
        r"120 rows \(20.00%\) with missing or blank text",
        "missing_text",
    ),
    BrokenDataset(
        "all-duplicates",
        lambda f, df: _csv(f, df.assign(text=df["text"].iloc[0], label=df["label"].iloc[0])),
        "invalid",
        r"599 rows \(99.83%\) repeat an earlier row's text exactly",
        "exact_duplicates",
    ),
    BrokenDataset(
        "single-class",
        lambda f, df: _csv(f, df[df["label"] == "positive"]),
        "invalid",
        r"label 'negative' has 0 rows, needs at least 20",
        "min_rows_per_class",
    ),
    BrokenDataset(
        "too-few-rows",
        lambda f, df: _csv(f, df.head(60)),
        "invalid",
        r"the data has 60 rows, needs at least 100",
        "min_rows",
    ),
    BrokenDataset(
        "replacement-characters",
        _with("text", 10, "Mojibake \ufffd\ufffd review"),
        "invalid",
        r"60 rows .* hold U\+FFFD replacement or control characters",
        "encoding_damage",
    ),
    BrokenDataset(
        "embedded-newlines-with-control-characters",
        _embedded_newlines,
        "invalid",
        r"20 rows .* hold U\+FFFD replacement or control characters",
        "encoding_damage",
    ),
    BrokenDataset(
        "hashes-not-text",
        _with("text", 4, "3f2a9c81 0b7d 44e1 9a6f 12c0d5e8b7a3"),
        "invalid",
        r"150 rows \(25.00%\) where letters are under 50% of the text",
        "alphabetic",
    ),
    BrokenDataset(
        "numbers-as-text",
        _numbers_as_text,
        "invalid",
        r"12 rows .* whose 'text' is not a string \(int\)",
        "text_type",
    ),
    BrokenDataset(
        "test-split-leakage",
        _held_out_copy,
        "invalid",
        r"25 rows .* of a held-out file share their normalised text with an earlier split",
        "leakage",
        lambda f: [f"data.test_uri={f / 'test.csv'}"],
    ),
    BrokenDataset(
        "conflicting-labels-as-error",
        lambda f, df: _csv(
            f,
            pd.concat(
                [
                    df,
                    df.head(30).assign(
                        label=lambda d: d["label"].map({"positive": "negative", "negative": "positive"})
                    ),
                ]
            ),
        ),
        "invalid",
        r"60 rows .* carry a text that also occurs with another label",
        "conflicting_labels",
        lambda f: ["data.validation.conflicting_labels.severity=error"],
    ),
    BrokenDataset(
        "extra-columns-as-error",
        lambda f, df: _csv(f, df.assign(rating=5, url="https://example.org")),
        "invalid",
        r"unexpected column\(s\) \['rating', 'url'\]",
        "extra_columns",
        lambda f: ["data.validation.extra_columns=error"],
    ),
    BrokenDataset(
        "too-long-texts",
        _with("text", 3, "word " * 400),
        "invalid",
        r"200 rows .* with text outside 2\.\.1000 characters",
        "text_length",
        lambda f: [
            "data.validation.text_length.severity=error",
            "data.validation.text_length.max_chars=1000",
        ],
    ),
    BrokenDataset(
        "imbalanced-classes",
        lambda f, df: _csv(
            f, pd.concat([df[df["label"] == "negative"].head(25), df[df["label"] == "positive"]])
        ),
        "invalid",
        r"the largest class has 13\.\d times the rows of the smallest",
        "class_imbalance",
        lambda f: ["data.validation.class_imbalance.severity=error"],
    ),
]
