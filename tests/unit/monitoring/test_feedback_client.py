"""Reading labelled CSV files for `refinery feedback` (refinery.client.read_labelled)."""

from __future__ import annotations

from pathlib import Path

import pytest

from refinery.client import read_labelled
from refinery.errors import RefineryError


def _csv(tmp_path: Path, content: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "labelled.csv"
    path.write_text(content, encoding=encoding)
    return path


def test_pairs_in_file_order_with_exact_texts(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        'id,review,sentiment\n1,"Great, really great",positive\n2,"  spaced  ",  negative \n'
        '3,"two\nlines",positive\n',
        encoding="utf-8-sig",  # a byte-order mark, as spreadsheet programs write
    )
    assert read_labelled(path, "review", "sentiment") == [
        ("Great, really great", "positive"),
        ("  spaced  ", "negative"),
        ("two\nlines", "positive"),
    ]
    assert read_labelled(path, "review", "sentiment", limit=2) == [
        ("Great, really great", "positive"),
        ("  spaced  ", "negative"),
    ]
    assert read_labelled(path, "review", "sentiment", limit=0) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,label\n", None),
        ("review,label\na,positive\n", "has no column(s) 'text'; its header is 'review', 'label'"),
        ("text,lbl\na,positive\n", "has no column(s) 'label'"),
        ("", "has no column(s) 'text', 'label'; its header is (empty)"),
        ("text,label\na,positive\n  ,negative\n", "line 3: column 'text' is blank"),
        ("text,label\na,positive\nb,\n", "line 3: column 'label' is blank"),
        ("text,label\na,positive\nb\n", "line 3: column 'label' is blank"),
    ],
    ids=[
        "header-only",
        "no-text-column",
        "no-label-column",
        "empty-file",
        "blank-text",
        "blank-label",
        "short-row",
    ],
)
def test_bad_files_name_the_column_and_line(tmp_path: Path, content: str, message: str | None) -> None:
    path = _csv(tmp_path, content)
    if message is None:
        assert read_labelled(path, "text", "label") == []
        return
    with pytest.raises(RefineryError, match=r"labelled\.csv") as bad:
        read_labelled(path, "text", "label")
    assert message in str(bad.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(RefineryError, match=r"cannot read .*missing\.csv"):
        read_labelled(tmp_path / "missing.csv", "text", "label")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9,positive\n".encode("latin-1"))
    with pytest.raises(RefineryError, match=r"cannot read .*latin\.csv.*utf-8"):
        read_labelled(latin, "text", "label")
