"""The prepared dataset as fine-tuning reads it: the train and validation splits and the class weights.

A prepared dataset directory (written by the prepare step) holds ``train.parquet`` and
``validation.parquet`` (columns ``text`` and ``label``) and ``prepared.json``, whose ``class_weights``,
when set (``data.prepare.balance: class_weights``), weight the training loss. :func:`read_training_data`
reads and checks all three, raising a :class:`~refinery.errors.TrainingError` that names the file at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from refinery.errors import TrainingError
from refinery.results import read_json

PREPARED_JSON = "prepared.json"


@dataclass(frozen=True)
class TrainingData:
    """The rows a fine-tuning trains and validates on, and the loss weight per label (None: unweighted)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    class_weights: dict[str, float] | None


def read_training_data(data_dir: Path, labels: tuple[str, ...]) -> TrainingData:
    """Read and check the train and validation splits and the class weights of ``data_dir``.

    Raises:
        TrainingError: A split is missing, unreadable, empty, lacks a column, has rows with no text or a
            label outside ``labels``; or ``prepared.json`` is unreadable or its weights do not match.
    """
    return TrainingData(
        train=read_split(data_dir, "train", labels),
        validation=read_split(data_dir, "validation", labels),
        class_weights=read_class_weights(data_dir, labels),
    )


def read_split(data_dir: Path, split: str, labels: tuple[str, ...]) -> pd.DataFrame:
    """``<split>.parquet`` with ``text`` and ``label`` as strings, checked against ``labels``."""
    path = data_dir / f"{split}.parquet"
    if not path.is_file():
        raise TrainingError(f"{split} split not found: {path}")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise TrainingError(f"cannot read {split} split {path}: {exc}") from exc
    missing = [c for c in ("text", "label") if c not in frame.columns]
    if missing:
        raise TrainingError(
            f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(map(str, frame.columns))})"
        )
    if frame.empty:
        raise TrainingError(f"{split} split {path} has no rows")
    if frame["text"].isna().any():
        raise TrainingError(f"{path}: {int(frame['text'].isna().sum())} row(s) with no text")
    frame = frame.assign(text=frame["text"].astype(str), label=frame["label"].astype(str))
    unknown = sorted(set(frame["label"]) - set(labels))
    if unknown:
        raise TrainingError(
            f"{path}: label(s) {', '.join(map(repr, unknown))} are not in data.labels {list(labels)}"
        )
    return frame


def read_class_weights(data_dir: Path, labels: tuple[str, ...]) -> dict[str, float] | None:
    """The ``class_weights`` recorded in the prepared data's ``prepared.json``, in label order.

    ``None`` when there is no ``prepared.json`` or it records no weights.

    Raises:
        TrainingError: ``prepared.json`` is unreadable, or its weights do not match ``data.labels``.
    """
    path = data_dir / PREPARED_JSON
    if not path.is_file():
        return None
    try:
        weights = read_json(path).get("class_weights")
    except ValueError as exc:
        raise TrainingError(f"cannot read {path}: {exc}") from None
    if weights is None:
        return None
    if not isinstance(weights, dict) or set(weights) != set(labels):
        raise TrainingError(
            f"{path}: class_weights must give one weight per label of data.labels {list(labels)}, "
            f"got {weights!r}"
        )
    out: dict[str, float] = {}
    for label in labels:
        value = weights[label]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise TrainingError(f"{path}: class_weights[{label!r}] must be a positive number, got {value!r}")
        out[label] = float(value)
    return out
