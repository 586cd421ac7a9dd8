"""Preparing validated data for training: normalise, deduplicate, split, and record the drift reference.

Output layout (the contract the training, evaluation and registry stages read):

- ``train.parquet``, ``validation.parquet``, ``test.parquet``: columns ``text`` and ``label`` (strings),
- ``reference.parquet``: :func:`~refinery.monitoring.descriptors.text_descriptors` of the training texts
  plus ``label``, the profile drift monitoring compares served requests against,
- ``prepared.json``: :class:`PreparedData`.

Everything is written into a temporary folder next to ``out_dir`` and moved in only when complete, so a
failure leaves no partial dataset behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from refinery.config import RunConfig
from refinery.data.load import file_sha256, read_table, stringify
from refinery.errors import DataError
from refinery.monitoring.descriptors import text_descriptors
from refinery.results import load_result, to_jsonable, write_json

SPLITS = ("train", "validation", "test")
# Invisible characters that carry no meaning in a review but make equal texts differ.
_INVISIBLE = "[\u200b\u2060\ufeff]"


@dataclass(frozen=True)
class PreparedData:
    """What :func:`prepare_data` did and where it put the result.

    Attributes:
        data_uri: The input data's location.
        data_sha256: SHA-256 of the input file's bytes (data lineage).
        rows_in: Rows read.
        blank_removed: Rows dropped because their text was missing or blank after normalisation.
        duplicates_removed: Rows dropped because their normalised text repeated an earlier row's.
        conflicting_duplicates: Of those, how many carried a different label than the kept row.
        rows_out: Rows kept (the sum of ``split_sizes``).
        split_sizes: Rows per split (``train``, ``validation``, ``test``).
        label_counts: Rows per label over all kept rows, in declared label order.
        split_label_counts: Rows per label in each split.
        seed: The split seed.
        paths: ``train``, ``validation``, ``test``, ``reference`` and ``prepared`` file paths.
    """

    data_uri: str
    data_sha256: str
    rows_in: int
    blank_removed: int
    duplicates_removed: int
    conflicting_duplicates: int
    rows_out: int
    split_sizes: dict[str, int]
    label_counts: dict[str, int]
    split_label_counts: dict[str, dict[str, int]]
    seed: int
    paths: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return to_jsonable(self)

    def metrics(self) -> dict[str, float]:
        """Counts of what preparation removed and kept, as flat numbers for the step's KFP Metrics."""
        counts = {
            "rows_in": self.rows_in,
            "blank_removed": self.blank_removed,
            "duplicates_removed": self.duplicates_removed,
            "conflicting_duplicates": self.conflicting_duplicates,
            "rows_out": self.rows_out,
        }
        counts.update({f"{split}_rows": n for split, n in self.split_sizes.items()})
        return {k: float(v) for k, v in counts.items()}

    def write_json(self, path: Path) -> Path:
        """Write this result as JSON (atomically)."""
        return write_json(self, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreparedData:
        """Rebuild from :meth:`to_dict` output."""
        return cls(**data)

    @classmethod
    def read(cls, data_dir: Path) -> PreparedData:
        """Read ``prepared.json`` from a prepared dataset folder.

        Raises:
            DataError: The folder holds no readable ``prepared.json``.
        """
        return load_result(
            cls.from_dict,
            Path(data_dir) / "prepared.json",
            default_name="prepared.json",
            what="prepared-data record",
            error=DataError,
        )


def normalise_texts(texts: pd.Series) -> pd.Series:
    """Unicode NFC, invisible characters removed, whitespace runs collapsed to one space, ends stripped.

    Missing values become empty strings.
    """
    s = stringify(texts).fillna("").astype(str)
    return (
        s.str.normalize("NFC")
        .str.replace(_INVISIBLE, "", regex=True)
        .str.replace(r"\s+", " ", regex=True)
        .str.strip()
    )


def _counts(labels: pd.Series, declared: tuple[str, ...]) -> dict[str, int]:
    counts = labels.value_counts()
    return {label: int(counts.get(label, 0)) for label in declared}


def _check_columns(frame: pd.DataFrame, cfg: RunConfig) -> None:
    data = cfg.data
    for column, key in ((data.text_column, "data.text_column"), (data.label_column, "data.label_column")):
        if column not in frame.columns:
            raise DataError(f"{data.uri}: column '{column}' ({key}) is missing; found {list(frame.columns)}")
    labels = stringify(frame[data.label_column])
    missing = int(labels.isna().sum())
    if missing:
        raise DataError(
            f"{data.uri}: {missing} row(s) have no '{data.label_column}' (validate the data first)"
        )
    unknown = sorted(set(labels) - set(data.labels))
    if unknown:
        raise DataError(
            f"{data.uri}: column '{data.label_column}' holds undeclared label(s) {unknown}; "
            f"declared {list(data.labels)} (validate the data first)"
        )


def _split(frame: pd.DataFrame, cfg: RunConfig) -> dict[str, pd.DataFrame]:
    """Seeded, label-stratified train/validation/test split."""
    from sklearn.model_selection import train_test_split

    split = cfg.data.split
    try:
        rest, test = train_test_split(
            frame, test_size=split.test_fraction, random_state=split.seed, stratify=frame["label"]
        )
        # The validation share is of the whole; rescale it to the part left after the test split.
        train, validation = train_test_split(
            rest,
            test_size=split.validation_fraction / (1 - split.test_fraction),
            random_state=split.seed,
            stratify=rest["label"],
        )
    except ValueError as exc:
        counts = frame["label"].value_counts().to_dict()
        raise DataError(
            f"{cfg.data.uri}: cannot split {len(frame)} rows (per label: {counts}) into stratified "
            f"train/validation/test with validation_fraction={split.validation_fraction}, "
            f"test_fraction={split.test_fraction}: {exc}"
        ) from None
    return {
        name: part.reset_index(drop=True)
        for name, part in zip(SPLITS, (train, validation, test), strict=True)
    }


def _publish(staging: Path, out_dir: Path, names: list[str]) -> None:
    """Move finished files into ``out_dir``; ``prepared.json`` (last in ``names``) marks completion."""
    if not out_dir.exists():
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the dataset folder is not
        os.replace(staging, out_dir)
        return
    (out_dir / "prepared.json").unlink(missing_ok=True)
    for name in names:
        os.replace(staging / name, out_dir / name)


def prepare_data(cfg: RunConfig, out_dir: Path, frame: pd.DataFrame | None = None) -> PreparedData:
    """Clean, deduplicate and split the labelled data; write the prepared dataset folder.

    Texts are normalised (Unicode NFC, whitespace collapsed); rows whose text is then blank are dropped,
    as are rows repeating an earlier row's normalised text (the first occurrence is kept, so the same
    text can never land in two splits). The rest is split train/validation/test, stratified by label,
    with ``cfg.data.split``'s fractions and seed.

    Args:
        cfg: The run configuration.
        out_dir: The prepared dataset folder (created; existing files of the same names are replaced).
        frame: The data, when already read; by default it is read with :func:`read_table`. The data
            hash is always computed from the file at ``cfg.data.uri``.

    Returns:
        Counts, the data hash and the written paths.

    Raises:
        DataError: The input cannot be read, lacks a configured column, holds missing or undeclared
            labels, or has too few rows per label to split.
    """
    data = cfg.data
    out_dir = Path(out_dir)
    if frame is None:
        frame = read_table(data)
    sha = file_sha256(data.uri)
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    _check_columns(frame, cfg)

    table = pd.DataFrame(
        {
            "text": normalise_texts(frame[data.text_column]).to_numpy(dtype=object),
            "label": stringify(frame[data.label_column]).to_numpy(dtype=object),
        }
    )
    rows_in = len(table)
    blank = table["text"] == ""
    table = table[~blank]
    duplicated = table["text"].duplicated(keep="first")
    first_label = table.drop_duplicates("text", keep="first").set_index("text")["label"]
    dupes = table[duplicated]
    conflicting = int((dupes["label"].to_numpy() != first_label.loc[dupes["text"]].to_numpy()).sum())
    table = table[~duplicated].reset_index(drop=True)
    if table.empty:
        raise DataError(f"{data.uri}: no rows left after dropping blank texts and duplicates")

    parts = _split(table, cfg)
    reference = text_descriptors(parts["train"]["text"].tolist())
    reference["label"] = parts["train"]["label"].to_numpy()

    final_paths = {name: str(out_dir / f"{name}.parquet") for name in (*SPLITS, "reference")}
    final_paths["prepared"] = str(out_dir / "prepared.json")
    result = PreparedData(
        data_uri=data.uri,
        data_sha256=sha,
        rows_in=rows_in,
        blank_removed=int(blank.sum()),
        duplicates_removed=int(duplicated.sum()),
        conflicting_duplicates=conflicting,
        rows_out=len(table),
        split_sizes={name: len(part) for name, part in parts.items()},
        label_counts=_counts(table["label"], data.labels),
        split_label_counts={name: _counts(part["label"], data.labels) for name, part in parts.items()},
        seed=data.split.seed,
        paths=final_paths,
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        for name, part in parts.items():
            part.astype({"text": "string", "label": "string"}).to_parquet(
                staging / f"{name}.parquet", index=False
            )
        reference.astype({"label": "string"}).to_parquet(staging / "reference.parquet", index=False)
        result.write_json(staging / "prepared.json")
        _publish(staging, out_dir, [*(f"{n}.parquet" for n in (*SPLITS, "reference")), "prepared.json"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result
