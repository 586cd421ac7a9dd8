"""The data contract as a Great Expectations suite: derived columns, then one expectation per rule.

Rules that need more than a column's raw values (duplicates, conflicting labels, leakage between splits,
encoding damage, the share of letters) are computed first as derived columns with vectorised pandas
(:func:`derive_columns`; :mod:`refinery.data.text` holds the one definition of "the same text"). The
suite (:func:`build_expectations`) then checks the raw and derived columns, so every rule of
``cfg.data.validation`` is an expectation carrying its severity. Running the suite and summarising its
result is :mod:`refinery.data.validate`'s job.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from refinery.config import DataConfig, ShareCheck
from refinery.data import text as textrules

# Derived columns the suite checks beside the data's own columns.
SPLIT = "__split"
CLEAN_TEXT = "__clean_text"
CHARS = "__chars"
DAMAGED = "__damaged_chars"
ALPHA = "__alphabetic_share"
EXACT_DUPLICATE_OF = "__exact_duplicate_of_row"
NORMALISED_DUPLICATE_OF = "__normalised_duplicate_of_row"
CONFLICTING = "__other_labels_of_text"
LEAKED_FROM = "__also_in_split"


def row_numbers(frame: pd.DataFrame) -> np.ndarray:
    """Each row's 1-based number within its own file (a header line is not counted)."""
    return frame.groupby(SPLIT, sort=False).cumcount().to_numpy() + 1


def _earlier_row(hashes: pd.Series, rows: np.ndarray) -> pd.Series:
    """The file row number of the first earlier row with the same hash, as an object column (None if none)."""
    first = textrules.first_occurrence(hashes)
    present = first.notna().to_numpy()
    out = np.full(len(hashes), None, dtype=object)
    out[present] = rows[first[present].to_numpy(dtype=np.int64)]
    return pd.Series(out, index=hashes.index, dtype=object)


def derive_columns(frame: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    """The derived columns the suite checks, computed from the text and label columns.

    Rows without text (missing or blank) take no part in the length, duplicate, conflict and leakage
    rules: ``missing_text`` reports them once.
    """
    rows = row_numbers(frame)
    raw = frame[data.text_column]
    as_text = textrules.as_text(raw)
    clean = textrules.clean_texts(as_text)
    present = (clean != "").to_numpy()
    derived = pd.DataFrame(index=frame.index)
    derived[CLEAN_TEXT] = clean.where(present, None).astype(object)
    derived[CHARS] = as_text.str.len().where(present)
    derived[DAMAGED] = textrules.damaged_characters(as_text)
    derived[ALPHA] = textrules.alphabetic_share(as_text).where(present)

    split_hash = textrules.key_hashes(frame[SPLIT])
    keys = textrules.key_hashes(textrules.comparison_keys(clean, clean=True))
    exact = textrules.key_hashes(as_text) ^ split_hash
    near = keys ^ split_hash
    # Give every textless row its own hash so that blanks are not reported as duplicates of each other.
    blank_ids = pd.Series(np.arange(len(frame), dtype=np.uint64), index=frame.index)
    derived[EXACT_DUPLICATE_OF] = _earlier_row(exact.where(present, blank_ids), rows)
    derived[NORMALISED_DUPLICATE_OF] = _earlier_row(near.where(present, blank_ids), rows)

    if data.label_column in frame.columns:
        derived[CONFLICTING] = _conflicting_labels(keys, frame[data.label_column], present)
    if frame[SPLIT].nunique() > 1:
        derived[LEAKED_FROM] = _leaks(keys, frame[SPLIT], present)
    return derived


def _conflicting_labels(keys: pd.Series, labels: pd.Series, present: np.ndarray) -> pd.Series:
    """For rows whose normalised text also occurs with another label: all labels it carries."""
    usable = present & labels.notna().to_numpy()
    pairs = pd.DataFrame({"key": keys[usable], "label": labels[usable]}).drop_duplicates()
    multi = pairs[pairs["key"].duplicated(keep=False)]
    if multi.empty:
        return pd.Series(None, index=keys.index, dtype=object)
    joined = multi.sort_values("label").groupby("key", sort=False)["label"].agg(" | ".join)
    out = keys.map(joined).where(usable, None)
    return out.astype(object).where(out.notna(), None)


def _leaks(keys: pd.Series, splits: pd.Series, present: np.ndarray) -> pd.Series:
    """For rows of a later split (validation, then test): the earlier split holding the same normalised text."""
    out = pd.Series(None, index=keys.index, dtype=object)
    order = list(dict.fromkeys(splits))
    for i, later in enumerate(order[1:], start=1):
        mine = (splits == later).to_numpy() & present
        for earlier in order[:i]:
            theirs = keys[(splits == earlier).to_numpy() & present]
            hit = mine & keys.isin(theirs).to_numpy() & out.isna().to_numpy()
            out[hit] = earlier
    return out


def _gx_severity(severity: str) -> str:
    return "critical" if severity == "error" else "warning"


def _mostly(check: ShareCheck) -> float:
    return round(1.0 - check.max_share, 12)


# The rules that cannot run without the text column, and those that cannot run without the label column.
TEXT_RULES = (
    "text_type",
    "missing_text",
    "text_length",
    "exact_duplicates",
    "normalised_duplicates",
    "encoding_damage",
    "alphabetic",
)
LABEL_RULES = ("labels", "min_rows_per_class", "class_imbalance", "conflicting_labels")


class _Suite:
    """The expectations added so far, each tagged with its rule, severity and place in the suite."""

    def __init__(self, data: DataConfig, columns: list[str], derived: list[str]) -> None:
        import great_expectations.expectations as gxe

        self.gxe = gxe
        self.data = data
        self.rules = data.validation
        self.columns = columns
        self.derived = derived
        self.expected: list[Any] = []

    def add(self, check: str, severity: str, expectation: Any, **meta: Any) -> None:
        if severity == "off":
            return
        expectation.severity = _gx_severity(severity)
        expectation.meta = {"check": check, "severity": severity, "order": len(self.expected), **meta}
        self.expected.append(expectation)

    def add_columns(self) -> None:
        """The columns the config names exist; with ``extra_columns``, no others do."""
        data, gxe = self.data, self.gxe
        text, label, group = data.text_column, data.label_column, data.group_column
        required = [(text, "data.text_column"), (label, "data.label_column")]
        if group:
            required.append((group, "data.group_column"))
        required += [(column, "data.slice_columns") for column in data.slice_columns]
        for column, key in required:
            self.add(
                "columns",
                "error",
                gxe.ExpectColumnToExist(column=column, description=f"Column `{column}` exists"),
                config_key=key,
            )
        if self.rules.extra_columns != "ignore":
            known = [c for c in self.columns if c in {text, label, group, *data.slice_columns}]
            self.add(
                "extra_columns",
                "error" if self.rules.extra_columns == "error" else "warning",
                gxe.ExpectTableColumnsToMatchSet(column_set=known + self.derived, exact_match=True),
            )

    def add_text(self) -> None:
        """The rules on the text column and the columns derived from it."""
        from great_expectations.expectations.row_conditions import Column

        rules, gxe, text = self.rules, self.gxe, self.data.text_column
        self.add("text_type", "error", gxe.ExpectColumnValuesToBeInTypeList(column=text, type_list=["str"]))
        self.add(
            "missing_text",
            rules.missing_text.severity,
            gxe.ExpectColumnValuesToNotBeNull(column=CLEAN_TEXT, mostly=_mostly(rules.missing_text)),
        )
        length = rules.text_length
        self.add(
            "text_length",
            length.severity,
            gxe.ExpectColumnValuesToBeBetween(
                column=CHARS, min_value=length.min_chars, max_value=length.max_chars, mostly=_mostly(length)
            ),
        )
        for check, column in (
            ("exact_duplicates", EXACT_DUPLICATE_OF),
            ("normalised_duplicates", NORMALISED_DUPLICATE_OF),
        ):
            rule = getattr(rules, check)
            self.add(
                check, rule.severity, gxe.ExpectColumnValuesToBeNull(column=column, mostly=_mostly(rule))
            )
        if LEAKED_FROM in self.derived:
            self.add(
                "leakage",
                rules.leakage.severity,
                # The share is of the held-out rows: a growing training file must not loosen the rule.
                gxe.ExpectColumnValuesToBeNull(
                    column=LEAKED_FROM, mostly=_mostly(rules.leakage), row_condition=Column(SPLIT) != "train"
                ),
            )
        damage = rules.encoding_damage
        self.add(
            "encoding_damage",
            damage.severity,
            gxe.ExpectColumnValuesToBeBetween(column=DAMAGED, max_value=0, mostly=_mostly(damage)),
        )
        alpha = rules.alphabetic
        self.add(
            "alphabetic",
            alpha.severity,
            gxe.ExpectColumnValuesToBeBetween(column=ALPHA, min_value=alpha.min_alpha, mostly=_mostly(alpha)),
        )

    def add_labels(self) -> None:
        """The rules on the label column: present, declared, enough per class, balanced, not conflicting."""
        from refinery.data.expectations import (
            ExpectColumnClassCountsToBeAtLeast,
            ExpectColumnClassImbalanceRatioToBeAtMost,
        )

        rules, gxe, label, labels = self.rules, self.gxe, self.data.label_column, list(self.data.labels)
        self.add("labels", "error", gxe.ExpectColumnValuesToNotBeNull(column=label), kind="missing")
        self.add(
            "labels",
            "error",
            gxe.ExpectColumnValuesToBeInSet(column=label, value_set=labels),
            kind="declared",
        )
        per_class = rules.min_rows_per_class
        self.add(
            "min_rows_per_class",
            per_class.severity,
            ExpectColumnClassCountsToBeAtLeast(column=label, value_set=labels, min_count=per_class.min),
        )
        ratio = rules.class_imbalance
        self.add(
            "class_imbalance",
            ratio.severity,
            ExpectColumnClassImbalanceRatioToBeAtMost(
                column=label, value_set=labels, max_ratio=ratio.max_ratio
            ),
        )
        if CONFLICTING in self.derived:
            self.add(
                "conflicting_labels",
                rules.conflicting_labels.severity,
                gxe.ExpectColumnValuesToBeNull(column=CONFLICTING, mostly=_mostly(rules.conflicting_labels)),
            )


def build_expectations(
    data: DataConfig, columns: list[str], derived: list[str]
) -> tuple[list[Any], list[str]]:
    """The suite's expectations for the columns present, and the rules skipped for missing columns.

    Args:
        data: The data config: its columns, labels and ``validation`` rules.
        columns: The data's own columns.
        derived: The derived columns beside them (:func:`derive_columns`'s, and ``SPLIT``).

    Returns:
        The expectations in suite order (each one's ``meta`` names its rule, severity and order), and the
        names of the rules skipped because their column is missing.
    """
    suite = _Suite(data, columns, derived)
    skipped: list[str] = []
    suite.add_columns()
    if data.text_column in columns:
        suite.add_text()
    else:
        skipped += TEXT_RULES
    min_rows = data.validation.min_rows
    suite.add("min_rows", min_rows.severity, suite.gxe.ExpectTableRowCountToBeBetween(min_value=min_rows.min))
    if data.label_column in columns:
        suite.add_labels()
    else:
        skipped += LABEL_RULES
    group = data.group_column
    if group and group in columns:
        suite.add("group", "error", suite.gxe.ExpectColumnValuesToNotBeNull(column=group))
    return suite.expected, skipped
