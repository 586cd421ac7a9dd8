"""read_table: every supported format and location, and every way an input can be unreadable."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from refinery.config import DataConfig
from refinery.data.load import detect_format, file_sha256, read_table
from refinery.errors import DataError

FRAME = pd.DataFrame(
    {
        "text": ["great battery", "screen died", "NA", "null"],
        "label": ["positive", "negative", "positive", "negative"],
    }
)


def data_config(uri: str | Path, **kw: object) -> DataConfig:
    return DataConfig(uri=str(uri), labels=("negative", "positive"), **kw)


def write(frame: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("name", ["reviews.csv", "reviews.tsv", "reviews.jsonl", "reviews.parquet"])
def test_reads_every_format_by_extension(tmp_path: Path, name: str) -> None:
    path = write(FRAME, tmp_path / name)
    frame = read_table(data_config(path))
    # "NA" and "null" are review texts, not missing values.
    pd.testing.assert_frame_equal(frame, FRAME.astype(object))


@pytest.mark.parametrize("name", ["reviews.csv", "reviews.jsonl", "reviews.parquet"])
def test_integer_labels_read_as_strings(tmp_path: Path, name: str) -> None:
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 1]})
    out = read_table(DataConfig(uri=str(write(frame, tmp_path / name)), labels=("0", "1")))
    assert out["label"].tolist() == ["0", "1", "1"]


def test_jsonl_integer_labels_with_a_gap_keep_no_decimal_point(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": null}\n{"text": "c", "label": 0}\n')
    out = read_table(DataConfig(uri=str(path), labels=("0", "1")))
    assert out["label"].tolist() == ["1", None, "0"]


def test_memory_and_file_uris(tmp_path: Path) -> None:
    uri = f"memory://refinery-tests/{uuid.uuid4().hex}/reviews.csv"
    with fsspec.open(uri, "w") as fh:
        FRAME.to_csv(fh, index=False)
    try:
        assert read_table(data_config(uri))["text"].tolist() == FRAME["text"].tolist()
        assert file_sha256(uri) == hashlib.sha256(FRAME.to_csv(index=False).encode()).hexdigest()
    finally:
        fsspec.filesystem("memory").rm(uri)
    path = write(FRAME, tmp_path / "reviews.parquet")
    assert len(read_table(data_config(path.as_uri()))) == len(FRAME)


def test_explicit_format_and_compression(tmp_path: Path) -> None:
    path = tmp_path / "export.txt"
    FRAME.to_csv(path, sep="\t", index=False)
    assert len(read_table(data_config(path, format="tsv"))) == 4
    gz = tmp_path / "reviews.csv.gz"
    gz.write_bytes(gzip.compress(FRAME.to_csv(index=False).encode()))
    assert read_table(data_config(gz))["label"].tolist() == FRAME["label"].tolist()
    assert detect_format("s3://bucket/data/reviews.JSONL?version=3") == "jsonl"


def test_unknown_extension_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "reviews.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match=r"reviews\.xlsx.*data\.format"):
        read_table(data_config(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found: .*nope\.csv"):
        read_table(data_config(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match="directory"):
        read_table(data_config(tmp_path, format="csv"))


def test_empty_file_is_an_error_but_header_only_is_zero_rows(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty \(0 bytes\): .*empty\.csv"):
        read_table(data_config(empty))
    blank = tmp_path / "blank.csv"
    blank.write_text("\n\n")
    with pytest.raises(DataError, match=r"blank\.csv"):
        read_table(data_config(blank))
    header = tmp_path / "header.csv"
    header.write_text("text,label\n")
    frame = read_table(data_config(header))
    assert list(frame.columns) == ["text", "label"] and len(frame) == 0


def test_corrupt_files_name_the_file(tmp_path: Path) -> None:
    parquet = tmp_path / "broken.parquet"
    parquet.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(DataError, match=r"broken\.parquet as Parquet"):
        read_table(data_config(parquet))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\ngood,positive\nbad,negative,extra,fields\n")
    with pytest.raises(DataError, match=r"ragged\.csv as CSV.*line 3"):
        read_table(data_config(ragged))
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(json.dumps({"text": "a", "label": "positive"}) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl as JSON Lines: line 2"):
        read_table(data_config(jsonl))
    array = tmp_path / "array.jsonl"
    array.write_text('["a", "positive"]\n')
    with pytest.raises(DataError, match=r"line 1 is a list"):
        read_table(data_config(array))


def test_bytes_invalid_in_the_declared_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\nok,positive\ncafé crème,negative\n".encode("latin-1"))
    with pytest.raises(
        DataError, match=r"latin\.csv is not valid utf-8: byte\(s\) e9 at offset 26 \(line 3\)"
    ):
        read_table(data_config(path))
    frame = read_table(data_config(path, encoding="latin-1"))
    assert frame["text"].tolist() == ["ok", "café crème"]
    with pytest.raises(DataError, match=r"unknown encoding 'klingon'.*latin\.csv"):
        read_table(data_config(path, encoding="klingon"))


def test_byte_order_mark_and_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefftext,label\n,positive\n   ,negative\n".encode())
    frame = read_table(data_config(path))
    assert list(frame.columns) == ["text", "label"]
    assert frame["text"].isna().tolist() == [True, False]  # an empty field is missing, spaces are text


def test_file_sha256_is_the_hash_of_the_stored_bytes(tmp_path: Path) -> None:
    path = write(FRAME, tmp_path / "reviews.csv")
    assert file_sha256(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="not found"):
        file_sha256(str(tmp_path / "gone.csv"))


@pytest.mark.parametrize(("sep", "name"), [("\t", "tab"), (";", "semicolon"), ("|", "pipe")])
def test_a_file_delimited_otherwise_is_named_with_its_delimiter(tmp_path: Path, sep: str, name: str) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text(f"text{sep}label\nGood, really good{sep}1\nBad{sep}0\n")
    with pytest.raises(DataError, match=rf"reviews\.csv looks {name}-delimited, not CSV: its header line"):
        read_table(data_config(path))
    # A one-column file is not mistaken for one.
    path.write_text("text\nGood\n")
    assert read_table(data_config(path))["text"].tolist() == ["Good"]
