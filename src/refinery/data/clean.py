"""Cleaning one labelled file for preparation: check its columns, clean its texts, resolve conflicting
labels, drop duplicates (step 2 of :mod:`refinery.data.prepare`).

Texts are cleaned by :func:`~refinery.data.text.clean_texts` (Unicode NFC, invisible characters dropped,
whitespace collapsed) and blank rows dropped; texts seen with several labels (by
:func:`~refinery.data.text.comparison_keys`) are resolved by ``data.prepare.conflicting_labels`` (``drop``
all their rows, or keep the ``majority`` label's rows, dropping them all on a tie); then exact duplicates
(same clean text) and normalised duplicates (same comparison key) are dropped, the first occurrence kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from refinery.config import RunConfig
from refinery.data.load import stringify
from refinery.data.text import as_text, clean_texts, comparison_keys, first_occurrence, key_hashes
from refinery.errors import DataError

KEY = "_key"  # the hash of a row's comparison key
GROUP = "_group"  # the row's group (with data.group_column)
MISSING_SLICE = "(missing)"  # a slice column's value for rows that have none


@dataclass(frozen=True)
class CleanedFile:
    """One file after cleaning: columns text, label, the comparison-key hash (and group), plus counts."""

    table: pd.DataFrame
    rows_in: int
    blank_removed: int
    texts_changed: int
    conflicting_texts: int
    conflicting_removed: int
    exact_duplicates_removed: int
    normalised_duplicates_removed: int


def check_columns(frame: pd.DataFrame, cfg: RunConfig, uri: str, *, group: bool) -> None:
    data = cfg.data
    named = [(data.text_column, "data.text_column"), (data.label_column, "data.label_column")]
    if group and data.group_column:
        named.append((data.group_column, "data.group_column"))
    named += [(column, "data.slice_columns") for column in data.slice_columns]
    for column, key in named:
        if column not in frame.columns:
            raise DataError(f"{uri}: column '{column}' ({key}) is missing; found {list(frame.columns)}")
    labels = stringify(frame[data.label_column])
    missing = int(labels.isna().sum())
    if missing:
        raise DataError(f"{uri}: {missing} row(s) have no '{data.label_column}' (validate the data first)")
    unknown = sorted(set(labels) - set(data.labels))
    if unknown:
        raise DataError(
            f"{uri}: column '{data.label_column}' holds undeclared label(s) {unknown}; "
            f"declared {list(data.labels)} (validate the data first)"
        )
    if group and data.group_column:
        no_group = int(frame[data.group_column].isna().sum())
        if no_group:
            raise DataError(
                f"{uri}: {no_group} row(s) have no value in group column '{data.group_column}' "
                "(data.group_column); every row needs a group to be split by groups"
            )


def resolve_conflicts(table: pd.DataFrame, policy: str) -> tuple[pd.Series, int]:
    """Which rows survive the conflicting-labels policy, and how many texts had several labels."""
    pairs = table.groupby([KEY, "label"], sort=False).size().rename("votes").reset_index()
    labels_per_text = pairs.groupby(KEY)["label"].transform("size")
    conflicting_texts = int(pairs.loc[labels_per_text > 1, KEY].nunique())
    if policy == "drop":
        winners = pairs[labels_per_text == 1]
    else:  # majority: the label with the most rows wins; a tie leaves no winner
        top = pairs.groupby(KEY)["votes"].transform("max")
        at_top = pairs["votes"] == top
        ties = at_top.groupby(pairs[KEY]).transform("sum")
        winners = pairs[at_top & (ties == 1)]
    index = pd.MultiIndex.from_frame(winners[[KEY, "label"]])
    keep = pd.MultiIndex.from_frame(table[[KEY, "label"]]).isin(index)
    return pd.Series(keep, index=table.index), conflicting_texts


def clean_file(frame: pd.DataFrame, cfg: RunConfig, uri: str, *, group: bool) -> CleanedFile:
    """Clean one file's rows, resolve its conflicting labels and drop its duplicates."""
    data = cfg.data
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    check_columns(frame, cfg, uri, group=group)
    raw = frame[data.text_column]
    text = clean_texts(raw)
    blank = (text == "").to_numpy()
    changed = (text != as_text(raw)).to_numpy() & ~blank
    table = pd.DataFrame(
        {
            "text": text.to_numpy(dtype=object),
            "label": stringify(frame[data.label_column]).to_numpy(dtype=object),
        }
    )
    if group and data.group_column:
        table[GROUP] = stringify(frame[data.group_column]).to_numpy(dtype=object)
    for column in data.slice_columns:
        table[column] = stringify(frame[column]).fillna(MISSING_SLICE).to_numpy(dtype=object)
    table = table[~blank].reset_index(drop=True)
    table[KEY] = key_hashes(comparison_keys(table["text"], clean=True)).to_numpy()

    keep, conflicting_texts = resolve_conflicts(table, data.prepare.conflicting_labels)
    conflicting_removed = int((~keep).sum())
    table = table[keep.to_numpy()].reset_index(drop=True)
    # After the policy every comparison key carries one label: equal clean texts are exact duplicates.
    exact = first_occurrence(key_hashes(table["text"])).notna().to_numpy()
    table = table[~exact].reset_index(drop=True)
    normalised = first_occurrence(table[KEY]).notna().to_numpy()
    table = table[~normalised].reset_index(drop=True)
    if table.empty:
        raise DataError(
            f"{uri}: no rows left after dropping blank texts, conflicting labels and duplicates "
            f"({len(frame)} read)"
        )
    return CleanedFile(
        table=table,
        rows_in=len(frame),
        blank_removed=int(blank.sum()),
        texts_changed=int(changed.sum()),
        conflicting_texts=conflicting_texts,
        conflicting_removed=conflicting_removed,
        exact_duplicates_removed=int(exact.sum()),
        normalised_duplicates_removed=int(normalised.sum()),
    )
