"""The new labelled data a run adds to ``data.uri``: a labelling tool's drop location
(``data.incoming_uri``) and the feedback the service collected (``data.feedback``).

Both are read here, into one frame with the data section's text and label columns, so that the data
contract (:mod:`refinery.data.validate`) and preparation (:mod:`refinery.data.prepare`) see the same
rows. A run pins the feedback it reads by the id of the newest feedback row when it starts
(``feedback_through``): feedback that arrives during the run waits for the next one, and the run's
fingerprint covers exactly what it reads.

New rows whose text (by :func:`~refinery.data.text.comparison_keys`) is already in one of the base
files are dropped before anything else sees them: a text the base data holds keeps its place there, so
a new row can never leak a test text into training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

import pandas as pd

from refinery.data.load import FORMATS_BY_SUFFIX, file_sha256, filesystem, read_table, stringify
from refinery.data.text import clean_texts, comparison_keys, key_hashes
from refinery.errors import DataError

if TYPE_CHECKING:
    from refinery.config import DataConfig, RunConfig
    from refinery.monitoring.inference_log import InferenceLog

# The test split's column telling data.uri's rows (established) from new labelled rows (new); "new" is
# also the new rows' split name in the data contract's report.
DOMAIN_SLICE = "domain"
ESTABLISHED, NEW = "established", "new"
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class NewSource:
    """One source of new labelled rows, for the dataset's lineage.

    Attributes:
        kind: ``incoming`` (a file under ``data.incoming_uri``) or ``feedback`` (the service's store).
        uri: The file, or the feedback database (password masked).
        sha256: SHA-256 of the file's bytes, or of the feedback rows read (id, text, label).
        rows: Rows read from it.
        through_id: For feedback: the newest feedback id read.
    """

    kind: Literal["incoming", "feedback"]
    uri: str
    sha256: str
    rows: int
    through_id: int | None = None


@dataclass(frozen=True)
class NewRows:
    """The new labelled rows of a run, deduplicated against the base files.

    Attributes:
        frame: Rows with the data section's text and label columns (as the sources hold them).
        sources: Where they came from, with content hashes.
        rows_in: Rows read from every source together.
        base_duplicates_removed: Rows dropped because their text is already in a base file.
    """

    frame: pd.DataFrame
    sources: list[NewSource]
    rows_in: int
    base_duplicates_removed: int


def has_new_sources(data: DataConfig) -> bool:
    """Whether the data section names any source of new labelled rows."""
    return bool(data.incoming_uri) or data.feedback


def incoming_files(uri: str) -> list[str]:
    """The data files under ``data.incoming_uri``: the file itself, a folder's files of a known format
    (hidden files skipped, sub-folders included), or a glob's matches; sorted.

    Raises:
        DataError: Nothing is there, or a folder or glob holds no file of a known format.
    """
    fs, path = filesystem(uri)
    scheme = uri.split("://", 1)[0] if "://" in uri else None

    def as_uri(found: str) -> str:
        return found if scheme is None else f"{scheme}://{found.split('://', 1)[-1]}"

    try:
        if any(c in path for c in _GLOB_CHARS):
            found = [p for p in fs.glob(path) if not fs.isdir(p)]
        elif fs.isdir(path):
            found = list(fs.find(path))
        elif fs.exists(path):
            return [uri]
        else:
            raise DataError(f"data.incoming_uri {uri}: no such file or folder")
    except DataError:
        raise
    except Exception as exc:  # fsspec back-ends raise their own errors
        raise DataError(f"data.incoming_uri {uri}: cannot list it: {type(exc).__name__}: {exc}") from exc
    files = sorted(
        p
        for p in found
        if not PurePosixPath(p).name.startswith(".") and PurePosixPath(p).suffix.lower() in FORMATS_BY_SUFFIX
    )
    if not files:
        known = ", ".join(sorted(FORMATS_BY_SUFFIX))
        raise DataError(f"data.incoming_uri {uri}: holds no data file ({known})")
    return [as_uri(p) for p in files]


def feedback_watermark(cfg: RunConfig) -> int:
    """The id of the newest feedback row now (0 when there is none or ``data.feedback`` is off)."""
    if not cfg.data.feedback:
        return 0
    return _feedback_log(cfg).feedback_watermark()


def _feedback_log(cfg: RunConfig) -> InferenceLog:
    from refinery.monitoring.inference_log import InferenceLog

    url = cfg.serving.inference_log
    if not url:
        raise DataError(
            "data.feedback is on but serving.inference_log is empty: the feedback store is the service's"
            " inference log database (load the configuration with load_config)"
        )
    return InferenceLog(url)


def _read_feedback(cfg: RunConfig, through_id: int) -> tuple[pd.DataFrame, NewSource]:
    log = _feedback_log(cfg)
    rows = log.feedback_rows(through_id=through_id)
    digest = hashlib.sha256()
    for row_id, text, label in zip(rows["id"], rows["text"], rows["label"], strict=True):
        digest.update(f"{int(row_id)}\t{text}\t{label}\n".encode())
    data = cfg.data
    frame = pd.DataFrame(
        {data.text_column: rows["text"].astype(object), data.label_column: rows["label"].astype(object)}
    )
    source = NewSource("feedback", log.url, digest.hexdigest(), len(frame), through_id)
    return frame, source


def _read_incoming(data: DataConfig) -> tuple[list[pd.DataFrame], list[NewSource]]:
    frames, sources = [], []
    for uri in incoming_files(str(data.incoming_uri)):
        table = read_table(data.model_copy(update={"uri": uri, "format": "auto"}))
        missing = [c for c in (data.text_column, data.label_column) if c not in table.columns]
        if missing:
            raise DataError(
                f"{uri} (under data.incoming_uri) lacks column(s) {missing}; found {list(table.columns)}"
                " (new labelled rows use data.text_column and data.label_column)"
            )
        frames.append(table[[data.text_column, data.label_column]])
        sources.append(NewSource("incoming", uri, file_sha256(uri), len(table)))
    return frames, sources


def source_lines(cfg: RunConfig, feedback_through: int) -> list[str]:
    """One ``name=content-hash`` line per new source, for the run's fingerprint."""
    lines = []
    if cfg.data.incoming_uri:
        lines += [f"incoming:{uri}={file_sha256(uri)}" for uri in incoming_files(cfg.data.incoming_uri)]
    if cfg.data.feedback:
        _, source = _read_feedback(cfg, feedback_through)
        lines.append(f"feedback<={feedback_through}={source.sha256}")
    return lines


def read_new_rows(cfg: RunConfig, base: list[pd.DataFrame], feedback_through: int) -> NewRows | None:
    """Read the run's new labelled rows and drop those whose text a base file already holds.

    Args:
        cfg: The run configuration (``data.incoming_uri``, ``data.feedback``, ``serving.inference_log``).
        base: The base files' tables (``data.uri`` and the given splits), as read.
        feedback_through: The newest feedback id the run reads (see :func:`feedback_watermark`).

    Returns:
        The new rows, or None when the data section names no new source.

    Raises:
        DataError: A source cannot be read or lacks the text or label column.
    """
    data = cfg.data
    if not has_new_sources(data):
        return None
    frames: list[pd.DataFrame] = []
    sources: list[NewSource] = []
    if data.incoming_uri:
        frames, sources = _read_incoming(data)
    if data.feedback:
        frame, source = _read_feedback(cfg, feedback_through)
        frames.append(frame)
        sources.append(source)
    columns = [data.text_column, data.label_column]
    new = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    new[data.label_column] = stringify(new[data.label_column])
    known = pd.concat([_keys(t[data.text_column]) for t in base if data.text_column in t.columns])
    kept = new[~_keys(new[data.text_column]).isin(known).to_numpy()]
    return NewRows(
        frame=kept.reset_index(drop=True),
        sources=sources,
        rows_in=len(new),
        base_duplicates_removed=len(new) - len(kept),
    )


def _keys(texts: pd.Series) -> pd.Series:
    return key_hashes(comparison_keys(clean_texts(texts.astype(object).where(texts.notna(), "")), clean=True))


def is_new_test_row(keys: pd.Series, fraction: float) -> pd.Series:
    """Which new rows go to the ``new`` test set: chosen by the hash of the row's comparison key, so a
    text keeps its side from run to run (a row tested on once is never trained on later)."""
    buckets = keys.to_numpy(dtype="uint64") % 10_000
    return pd.Series(buckets < round(fraction * 10_000), index=keys.index)
