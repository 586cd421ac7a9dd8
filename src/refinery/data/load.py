"""Reading the labelled data: CSV, TSV, JSON Lines or Parquet, from a local path or an fsspec URI.

The file is read whole into memory through fsspec (so ``file://``, ``memory://``, ``s3://``, ... behave
alike), decoded with the declared encoding, and parsed. Every way the input can be unreadable ends in a
:class:`~refinery.errors.DataError` naming the file; a readable file with the wrong content (missing
columns, bad labels, too few rows) is *not* an error here, that is what validation reports.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

from refinery.config import DataConfig
from refinery.errors import DataError
from refinery.hashing import stream_sha256

FORMATS_BY_SUFFIX = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")


def detect_format(uri: str) -> str:
    """The data format named by a file's extension (a compression suffix such as ``.gz`` is skipped).

    Raises:
        DataError: The extension names no supported format.
    """
    name = PurePosixPath(uri.split("?", 1)[0]).name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    suffix = PurePosixPath(name).suffix
    if suffix in FORMATS_BY_SUFFIX:
        return FORMATS_BY_SUFFIX[suffix]
    known = ", ".join(sorted(FORMATS_BY_SUFFIX))
    raise DataError(
        f"cannot tell the format of {uri} from its extension {suffix or '(none)'!r} "
        f"(known: {known}); set data.format to csv, tsv, jsonl or parquet"
    )


def filesystem(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``uri`` and the path within it.

    Raises:
        DataError: The URI's scheme has no installed filesystem, or the URI is malformed.
    """
    import fsspec

    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError as exc:
        raise DataError(
            f"cannot open {uri}: the filesystem for its scheme is not installed ({exc})"
        ) from None
    except ValueError as exc:
        raise DataError(f"cannot open {uri}: {exc}") from None


def read_bytes(uri: str) -> bytes:
    """The raw bytes of the file at ``uri``, decompressed when its name ends in a compression suffix.

    Raises:
        DataError: The file is missing, a directory, empty (0 bytes) or cannot be read.
    """
    import fsspec

    fs, path = filesystem(uri)
    try:
        if not fs.exists(path):
            raise DataError(f"data file not found: {uri}")
        if fs.isdir(path):
            raise DataError(f"data path is a directory, not a file: {uri}")
        with fsspec.open(uri, "rb", compression="infer") as fh:
            raw: bytes = fh.read()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read data file {uri}: {type(exc).__name__}: {exc}") from exc
    if not raw:
        raise DataError(f"data file is empty (0 bytes): {uri}")
    return raw


def file_sha256(uri: str) -> str:
    """SHA-256 of the stored bytes of the file at ``uri`` (not decompressed), streamed in chunks.

    Raises:
        DataError: The file is missing or cannot be read.
    """
    import fsspec

    fs, path = filesystem(uri)
    try:
        if not fs.exists(path) or fs.isdir(path):
            raise DataError(f"data file not found: {uri}")
        with fsspec.open(uri, "rb") as fh:
            return stream_sha256(fh)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read data file {uri}: {type(exc).__name__}: {exc}") from exc


def _decode(raw: bytes, encoding: str, uri: str) -> str:
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r} (data.encoding) for {uri}") from None
    try:
        text = raw.decode(codec.name)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start : exc.end].hex(" ")
        raise DataError(
            f"{uri} is not valid {encoding}: byte(s) {bad} at offset {exc.start} (line {line}) "
            f"cannot be decoded ({exc.reason}); set data.encoding to the file's encoding"
        ) from None
    # A byte-order mark would otherwise become part of the first column's name.
    return text.removeprefix("\ufeff")


_DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


def _read_delimited(text: str, sep: str, cfg: DataConfig, uri: str, kind: str) -> pd.DataFrame:
    _check_delimiter(text, sep, uri, kind)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            dtype={cfg.text_column: str, cfg.label_column: str},
            # Only an empty field is missing: a review reading "NA" or "null" is text, not a gap.
            keep_default_na=False,
            na_values=[""],
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{uri} holds no {kind} header or rows (only whitespace)") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"cannot parse {uri} as {kind}: {str(exc).strip()}") from None
    return frame


def _check_delimiter(text: str, sep: str, uri: str, kind: str) -> None:
    """A header line without the expected delimiter but with another one: the file is delimited otherwise."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    if sep in header:
        return
    for delimiter, name in _DELIMITERS.items():
        if delimiter != sep and delimiter in header:
            raise DataError(
                f"{uri} looks {name}-delimited, not {kind}: its header line {header[:80]!r} holds no "
                f"{_DELIMITERS[sep]}; "
                "set data.format to the file's format (csv or tsv) or convert the file"
            )


def _read_jsonl(text: str, uri: str) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"cannot parse {uri} as JSON Lines: line {number}: {exc.msg}") from None
        if not isinstance(record, dict):
            raise DataError(
                f"cannot parse {uri} as JSON Lines: line {number} is a {type(record).__name__}, "
                "expected an object with one field per column"
            )
        records.append(record)
    return pd.DataFrame.from_records(records)


def _read_parquet(raw: bytes, uri: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(raw))
    except Exception as exc:
        raise DataError(f"cannot read {uri} as Parquet: {type(exc).__name__}: {exc}") from None


def stringify(series: pd.Series) -> pd.Series:
    """Turn every non-missing value into a string, keeping missing values missing.

    Integral floats lose their ``.0`` (a JSON or Parquet label column ``[0, 1, null]`` arrives as floats),
    so labels declared as ``"0"``/``"1"`` compare equal whatever the file format.
    """

    def _one(value: Any) -> Any:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    return series.map(_one).astype(object)


def read_table(cfg: DataConfig) -> pd.DataFrame:
    """Read the labelled data named by ``cfg.uri``.

    Columns keep the names they have in the file; the label column, when present, holds strings (or
    missing values). The text column keeps what the file holds (validation checks that it is text). A
    header-only file reads as a frame with 0 rows.

    Args:
        cfg: The data section of the run configuration (uri, format, encoding, column names).

    Returns:
        The table as read.

    Raises:
        DataError: The file is missing, empty (0 bytes), of an unknown format, not decodable in
            ``cfg.encoding`` (the message gives the byte offset and line), or cannot be parsed.
    """
    uri = cfg.uri
    fmt = detect_format(uri) if cfg.format == "auto" else cfg.format
    raw = read_bytes(uri)
    if fmt == "parquet":
        frame = _read_parquet(raw, uri)
    else:
        text = _decode(raw, cfg.encoding, uri)
        if fmt == "csv":
            frame = _read_delimited(text, ",", cfg, uri, "CSV")
        elif fmt == "tsv":
            frame = _read_delimited(text, "\t", cfg, uri, "TSV")
        else:
            frame = _read_jsonl(text, uri)
    frame.columns = [str(c) for c in frame.columns]
    if cfg.label_column in frame.columns:
        frame[cfg.label_column] = stringify(frame[cfg.label_column])
    return frame.reset_index(drop=True)


def fingerprint(data: DataConfig, new_sources: Sequence[str] = ()) -> str:
    """A hash of the content of every file validation and preparation read (the splits' files, and the
    synonym file when augmentation uses one), named by split, and of the run's new labelled sources
    (``new_sources``: one ``name=content-hash`` line each, see :func:`refinery.data.sources.source_lines`).

    The pipeline computes it when a run starts and hands it to the data steps, so that a step cached for
    other data is never reused: the same URI with new content is a new fingerprint.

    Raises:
        DataError: A file cannot be read (a missing one is fingerprinted as missing).
    """
    files = dict(data.split_uris())
    augment = data.prepare.augment
    if augment.enabled and augment.synonyms:
        files["synonyms"] = augment.synonyms
    lines = [f"{name}={_content_id(uri)}" for name, uri in sorted(files.items())]
    return hashlib.sha256("\n".join([*lines, *new_sources]).encode()).hexdigest()


def _content_id(uri: str) -> str:
    """The file's SHA-256, or ``missing``: a missing file is the data contract's to report, with its rules."""
    fs, path = filesystem(uri)
    try:
        missing = not fs.exists(path) or fs.isdir(path)
    except Exception as exc:  # fsspec back-ends raise their own errors (ClientError, OSError, ...)
        raise DataError(f"cannot read data file {uri}: {type(exc).__name__}: {exc}") from exc
    return "missing" if missing else file_sha256(uri)


def check_fingerprint(data: DataConfig, expected: str, new_sources: Sequence[str] = ()) -> None:
    """Stop when the data changed since the run took its :func:`fingerprint` (``expected``).

    Raises:
        DataError: The files' content is not what it was when the run started.
    """
    actual = fingerprint(data, new_sources)
    if actual != expected:
        files = [*data.split_uris().values(), *(line.rsplit("=", 1)[0] for line in new_sources)]
        raise DataError(
            f"the data changed during the run (fingerprint {expected[:12]} when it started, {actual[:12]} now;"
            f" sources: {', '.join(files)}): start the run again"
        )
