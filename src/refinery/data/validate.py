"""Data validation: the data contract, a Great Expectations suite built from ``cfg.data.validation``.

The suite runs over every labelled file of the run (``data.uri`` and, when given, ``data.validation_uri``
and ``data.test_uri``). Rules that need more than a column's raw values (duplicates, conflicting labels,
leakage between splits, encoding damage, the share of letters) are computed first as derived columns
with vectorised pandas (:mod:`refinery.data.text` holds the one definition of "the same text"); Great
Expectations then checks the raw and derived columns, so every rule is an expectation with a severity in
the GX result and in Data Docs.

``error`` failures stop the run (:meth:`ValidationReport.raise_for_failure`); ``warning`` failures are
reported and the run goes on. The reports, written together into the output folder:

- ``validation.json``: our summary (:class:`ValidationReport`) plus the full GX validation result,
- ``report.html``: a self-contained page (no scripts, no external stylesheets: it renders offline and
  inside the Kubeflow UI),
- ``report.md``: the same summary in Markdown,
- ``data_docs/``: the GX Data Docs site (open ``data_docs/index.html``; it loads its styles from CDNs).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refinery.config import DataConfig, RunConfig, ShareCheck
from refinery.data import text as textrules
from refinery.data.load import read_table, stringify
from refinery.errors import DataValidationError
from refinery.results import read_json, to_jsonable, write_json

SUITE_NAME = "refinery_data"
DOCS_SITE = "refinery_docs"  # an ephemeral context reserves "local_site"
MAX_ROWS_SHOWN = 10
TEXT_SHOWN = 160

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


@dataclass(frozen=True)
class OffendingRow:
    """One row that broke a rule: where it is, its text, and what was wrong with it."""

    split: str
    row: int
    text: str
    value: str | None = None

    def where(self, qualified: bool) -> str:
        """``row 12``, or ``test row 12`` when several files were validated."""
        return f"{self.split} row {self.row}" if qualified else f"row {self.row}"


@dataclass(frozen=True)
class CheckFailure:
    """One failed rule of the data contract, summarised for people.

    Attributes:
        check: The rule's name in ``data.validation`` (``missing_text``, ``leakage``, ...) or, for the
            rules that always apply, ``columns``, ``text_type``, ``labels``.
        expectation: The GX expectation type that checked it.
        severity: ``error`` (stops the run) or ``warning``.
        column: The column it checks (``None`` for table-level rules).
        observed: What was found (rows breaking the rule, a count, a ratio).
        threshold: What the contract allows, in words.
        message: One sentence saying what is wrong, naming the config key to change.
        rows: Up to ten offending rows with their text.
    """

    check: str
    expectation: str
    severity: str
    column: str | None
    observed: Any
    threshold: str
    message: str
    rows: list[OffendingRow] = field(default_factory=list)

    def describe(self) -> str:
        """``check (expectation on column): message``."""
        return f"{self.check} ({self.expectation} on {self.column or 'table'}): {self.message}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckFailure:
        """Rebuild from :func:`to_jsonable` output."""
        return cls(**{**data, "rows": [OffendingRow(**r) for r in data.get("rows", [])]})


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating a run's labelled data.

    Attributes:
        success: No ``error`` rule failed (warnings allowed).
        files: The validated files by split (``train``, and ``validation``/``test`` when given).
        row_count: Rows over all files.
        columns: The data's own columns.
        failures: Failed ``error`` rules, in suite order.
        warnings: Failed ``warning`` rules, in suite order.
        passed: Names of the rules that held.
        skipped: Rules that could not run because their column is missing.
        label_counts: Rows per label (declared labels first, in order).
        statistics: GX's counts of evaluated / successful expectations.
        paths: Where the reports were written.
    """

    success: bool
    files: dict[str, str]
    row_count: int
    columns: list[str]
    failures: list[CheckFailure]
    warnings: list[CheckFailure]
    passed: list[str]
    skipped: list[str]
    label_counts: dict[str, int]
    statistics: dict[str, Any]
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def data_uri(self) -> str:
        """The training file."""
        return self.files["train"]

    def raise_for_failure(self) -> None:
        """Raise :class:`DataValidationError` naming every failed ``error`` rule.

        Raises:
            DataValidationError: At least one ``error`` rule failed.
        """
        if self.success:
            return
        details = "; ".join(f.describe() for f in self.failures)
        raise DataValidationError(f"data validation failed for {self.data_uri}: {details}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """Rebuild a report from :meth:`to_dict` output (extra keys such as the GX result are ignored)."""
        names = cls.__dataclass_fields__
        kept = {k: v for k, v in data.items() if k in names}
        kept["failures"] = [CheckFailure.from_dict(f) for f in data["failures"]]
        kept["warnings"] = [CheckFailure.from_dict(f) for f in data["warnings"]]
        return cls(**kept)

    @classmethod
    def read(cls, path: Path) -> ValidationReport:
        """Read a report from a ``validation.json`` written by :func:`validate_data`."""
        return cls.from_dict(read_json(path))

    def to_markdown(self) -> str:
        """The Markdown summary (see :mod:`refinery.data.report`)."""
        from refinery.data.report import render_markdown

        return render_markdown(self)

    def to_html(self) -> str:
        """The self-contained HTML page (see :mod:`refinery.data.report`)."""
        from refinery.data.report import render_html

        return render_html(self)


# ---------------------------------------------------------------------------------------------------
# Reading and derived columns


def read_splits(
    data: DataConfig, cfg: RunConfig | None = None, feedback_through: int = 0
) -> tuple[pd.DataFrame, dict[str, str], list[int]]:
    """Read every file of the run into one frame with a ``__split`` column.

    With ``cfg``, the run's new labelled rows (:mod:`refinery.data.sources`: ``data.incoming_uri`` and
    the service's feedback through id ``feedback_through``), less those a base file already holds,
    follow as split ``new``: the contract checks them like the rest, leakage into every split included.

    Returns:
        The frame (positional index), the files by split, and each file's row count (in split order).

    Raises:
        DataError: A file cannot be read (see :func:`~refinery.data.load.read_table`).
    """
    from refinery.data.sources import NEW, read_new_rows

    files = data.split_uris()
    frames = [read_table(data.model_copy(update={"uri": uri})) for uri in files.values()]
    new = read_new_rows(cfg, frames, feedback_through) if cfg is not None else None
    if new is not None and len(new.frame):
        frames.append(new.frame)
        files[NEW] = ", ".join(source.uri for source in new.sources)
    return _union(frames, list(files)), files, [len(f) for f in frames]


def _union(frames: list[pd.DataFrame], splits: list[str]) -> pd.DataFrame:
    parts = [f.assign(**{SPLIT: name}) for f, name in zip(frames, splits, strict=True)]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)


def _row_numbers(frame: pd.DataFrame) -> np.ndarray:
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
    rows = _row_numbers(frame)
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


# ---------------------------------------------------------------------------------------------------
# The suite


def _gx_severity(severity: str) -> str:
    return "critical" if severity == "error" else "warning"


def _mostly(check: ShareCheck) -> float:
    return round(1.0 - check.max_share, 12)


def _build_expectations(
    data: DataConfig, columns: list[str], derived: list[str]
) -> tuple[list[Any], list[str]]:
    """The suite's expectations for the columns present, and the rules skipped for missing columns."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    rules = data.validation
    text, label, group = data.text_column, data.label_column, data.group_column
    expected: list[Any] = []
    skipped: list[str] = []

    def add(check: str, severity: str, expectation: Any, **meta: Any) -> None:
        if severity == "off":
            return
        expectation.severity = _gx_severity(severity)
        expectation.meta = {"check": check, "severity": severity, "order": len(expected), **meta}
        expected.append(expectation)

    required = [(text, "data.text_column"), (label, "data.label_column")]
    if group:
        required.append((group, "data.group_column"))
    required += [(column, "data.slice_columns") for column in data.slice_columns]
    for column, key in required:
        add(
            "columns",
            "error",
            gxe.ExpectColumnToExist(column=column, description=f"Column `{column}` exists"),
            config_key=key,
        )
    if rules.extra_columns != "ignore":
        known = [c for c in columns if c in {text, label, group, *data.slice_columns}]
        add(
            "extra_columns",
            "error" if rules.extra_columns == "error" else "warning",
            gxe.ExpectTableColumnsToMatchSet(column_set=known + derived, exact_match=True),
        )

    if text in columns:
        add("text_type", "error", gxe.ExpectColumnValuesToBeInTypeList(column=text, type_list=["str"]))
        add(
            "missing_text",
            rules.missing_text.severity,
            gxe.ExpectColumnValuesToNotBeNull(column=CLEAN_TEXT, mostly=_mostly(rules.missing_text)),
        )
        length = rules.text_length
        add(
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
            add(check, rule.severity, gxe.ExpectColumnValuesToBeNull(column=column, mostly=_mostly(rule)))
        if LEAKED_FROM in derived:
            add(
                "leakage",
                rules.leakage.severity,
                # The share is of the held-out rows: a growing training file must not loosen the rule.
                gxe.ExpectColumnValuesToBeNull(
                    column=LEAKED_FROM, mostly=_mostly(rules.leakage), row_condition=Column(SPLIT) != "train"
                ),
            )
        damage = rules.encoding_damage
        add(
            "encoding_damage",
            damage.severity,
            gxe.ExpectColumnValuesToBeBetween(column=DAMAGED, max_value=0, mostly=_mostly(damage)),
        )
        alpha = rules.alphabetic
        add(
            "alphabetic",
            alpha.severity,
            gxe.ExpectColumnValuesToBeBetween(column=ALPHA, min_value=alpha.min_alpha, mostly=_mostly(alpha)),
        )
    else:
        skipped += [
            "text_type",
            "missing_text",
            "text_length",
            "exact_duplicates",
            "normalised_duplicates",
            "encoding_damage",
            "alphabetic",
        ]

    add("min_rows", rules.min_rows.severity, gxe.ExpectTableRowCountToBeBetween(min_value=rules.min_rows.min))
    if label in columns:
        add("labels", "error", gxe.ExpectColumnValuesToNotBeNull(column=label), kind="missing")
        add(
            "labels",
            "error",
            gxe.ExpectColumnValuesToBeInSet(column=label, value_set=list(data.labels)),
            kind="declared",
        )
        from refinery.data.expectations import (
            ExpectColumnClassCountsToBeAtLeast,
            ExpectColumnClassImbalanceRatioToBeAtMost,
        )

        per_class = rules.min_rows_per_class
        add(
            "min_rows_per_class",
            per_class.severity,
            ExpectColumnClassCountsToBeAtLeast(
                column=label, value_set=list(data.labels), min_count=per_class.min
            ),
        )
        ratio = rules.class_imbalance
        add(
            "class_imbalance",
            ratio.severity,
            ExpectColumnClassImbalanceRatioToBeAtMost(
                column=label, value_set=list(data.labels), max_ratio=ratio.max_ratio
            ),
        )
        if CONFLICTING in derived:
            add(
                "conflicting_labels",
                rules.conflicting_labels.severity,
                gxe.ExpectColumnValuesToBeNull(column=CONFLICTING, mostly=_mostly(rules.conflicting_labels)),
            )
    else:
        skipped += ["labels", "min_rows_per_class", "class_imbalance", "conflicting_labels"]
    if group and group in columns:
        add("group", "error", gxe.ExpectColumnValuesToNotBeNull(column=group))
    return expected, skipped


# ---------------------------------------------------------------------------------------------------
# Turning GX results into failures people can act on


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _share(count: int, total: int) -> str:
    return f"{_rows(count)} ({count / total:.2%})" if total else _rows(count)


def _short(value: Any, limit: int = TEXT_SHOWN) -> str:
    text = value if isinstance(value, str) and value.strip() else repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _label_set(labels: tuple[str, ...]) -> str:
    return "{" + ", ".join(labels) + "}"


def _looks_like_floats(values: list[Any]) -> bool:
    try:
        return any("." in str(v) for v in values) and all(float(v) == float(v) for v in values)
    except (TypeError, ValueError):
        return False


_VALUE_WORDS = {
    CHARS: lambda v: f"{int(v)} characters",
    DAMAGED: lambda v: f"{int(v)} damaged character{'s' if int(v) != 1 else ''}",
    ALPHA: lambda v: f"{float(v):.0%} letters",
    EXACT_DUPLICATE_OF: lambda v: f"same text as row {v}",
    NORMALISED_DUPLICATE_OF: lambda v: f"same normalised text as row {v}",
    CONFLICTING: lambda v: f"labelled {v}",
    LEAKED_FROM: lambda v: f"also in {v}",
}


class _Summariser:
    """Turns failed GX expectation results into :class:`CheckFailure` records with offending rows."""

    def __init__(self, frame: pd.DataFrame, data: DataConfig) -> None:
        self.frame = frame
        self.data = data
        self.rows = _row_numbers(frame)
        self.total = len(frame)
        self.columns = [c for c in frame.columns if c != SPLIT and not c.startswith("__")]

    def offending(self, result: dict[str, Any], column: str | None) -> list[OffendingRow]:
        positions = (result.get("partial_unexpected_index_list") or [])[:MAX_ROWS_SHOWN]
        text = self.data.text_column
        described = _VALUE_WORDS.get(column or "")
        out = []
        for pos in positions:
            value = self.frame[column].iat[pos] if column in self.frame.columns else None
            shown: str | None
            if described and value is not None:
                shown = described(value)
            elif column == text:
                shown = f"{type(value).__name__} {_short(value, 40)}"
            else:
                shown = None if value is None else _short(value, 40)
            body = self.frame[text].iat[pos] if text in self.frame.columns else None
            split = str(self.frame[SPLIT].iat[pos])
            out.append(OffendingRow(split, int(self.rows[pos]), _short(body), shown))
        return out

    def summarise(self, result: Any) -> CheckFailure:
        config = result.expectation_config
        meta = config.meta or {}
        check, severity = meta.get("check", config.type), meta.get("severity", "error")
        column = config.kwargs.get("column") or meta.get("column")
        res = result.result or {}
        exc = result.exception_info or {}

        # Derived columns are computed from the text: name the text column in the report.
        data_column = self.data.text_column if column and column.startswith("__") else column

        def failure(observed: Any, threshold: str, message: str) -> CheckFailure:
            rows = self.offending(res, column) if "partial_unexpected_index_list" in res else []
            return CheckFailure(check, config.type, severity, data_column, observed, threshold, message, rows)

        if exc.get("raised_exception"):
            return CheckFailure(
                check,
                config.type,
                severity,
                column,
                None,
                "evaluates",
                f"could not be evaluated: {exc.get('exception_message')}",
            )
        rules = self.data.validation
        count = int(res.get("unexpected_count") or 0)
        # A map rule's share is of the rows it looked at (for leakage: the held-out rows).
        found = _share(count, int(res.get("element_count") or self.total))
        key = f"data.validation.{check}"
        if check == "columns":
            message = f"column '{column}' ({meta.get('config_key')}) is missing; the data has columns {self.columns or '(none)'}"
            return CheckFailure(check, config.type, severity, column, "missing", "column present", message)
        if check == "extra_columns":
            extra = (res.get("details") or {}).get("mismatched", {}).get("unexpected", [])
            message = f"unexpected column(s) {extra} besides the text, label, group and slice columns ({key}: {rules.extra_columns})"
            return CheckFailure(check, config.type, severity, None, extra, "no other columns", message)
        if check == "text_type":
            kinds = sorted({type(v).__name__ for v in res.get("partial_unexpected_list") or []})
            message = f"{found} whose '{column}' is not a string ({', '.join(kinds)}): is the text column mis-parsed?"
            return failure(count, "every value a string", message)
        if check == "missing_text":
            message = f"{found} with missing or blank text; allowed {rules.missing_text.max_share:.2%} ({key}.max_share)"
            return failure(count, f"<= {rules.missing_text.max_share:.2%} of rows", message)
        if check == "text_length":
            length = rules.text_length
            bounds = f"{length.min_chars}..{length.max_chars} characters"
            message = f"{found} with text outside {bounds}; allowed {length.max_share:.2%} ({key})"
            return failure(count, f"<= {length.max_share:.2%} of rows outside {bounds}", message)
        if check in (
            "exact_duplicates",
            "normalised_duplicates",
            "conflicting_labels",
            "leakage",
            "encoding_damage",
        ):
            rule: ShareCheck = getattr(rules, check)
            what = {
                "exact_duplicates": "repeat an earlier row's text exactly",
                "normalised_duplicates": "repeat an earlier row's text once case, accents, punctuation and spacing are ignored",
                "conflicting_labels": "carry a text that also occurs with another label",
                "leakage": "of a held-out file share their normalised text with an earlier split (train before validation before test)",
                "encoding_damage": f"hold U+FFFD replacement or control characters (is data.encoding={self.data.encoding!r} right?)",
            }[check]
            message = f"{found} {what}; allowed {rule.max_share:.2%} ({key}.max_share)"
            return failure(count, f"<= {rule.max_share:.2%} of rows", message)
        if check == "alphabetic":
            alpha = rules.alphabetic
            message = f"{found} where letters are under {alpha.min_alpha:.0%} of the text (binary or mis-parsed column?); allowed {alpha.max_share:.2%} ({key})"
            return failure(
                count, f"<= {alpha.max_share:.2%} of rows under {alpha.min_alpha:.0%} letters", message
            )
        if check == "min_rows":
            observed = int(res.get("observed_value") or 0)
            message = f"the data has {_rows(observed)}, needs at least {rules.min_rows.min} ({key}.min)"
            return CheckFailure(
                check, config.type, severity, None, observed, f">= {rules.min_rows.min} rows", message
            )
        if check == "labels" and meta.get("kind") == "missing":
            return failure(count, "0 rows", f"{found} with no '{column}'")
        if check == "labels":
            distinct = [c["value"] for c in res.get("partial_unexpected_counts") or []]
            labels = _label_set(self.data.labels)
            message = f"{found} with labels outside {labels} (data.labels): {[_short(v, 40) for v in distinct[:MAX_ROWS_SHOWN]]}"
            if _looks_like_floats(distinct):
                message += "; they look like numbers written as floats"
            return failure(count, f"every value in {labels}", message)
        if check == "min_rows_per_class":
            short = res.get("observed_value") or {}
            need = rules.min_rows_per_class.min
            labels = "; ".join(f"label '{value}' has {_rows(n)}" for value, n in short.items())
            message = f"{labels}, needs at least {need} per label ({key}.min)"
            return CheckFailure(
                check, config.type, severity, column, short, f">= {need} rows per label", message
            )
        if check == "class_imbalance":
            ratio = res.get("observed_value")
            counts = (res.get("details") or {}).get("counts", {})
            allowed = f"allowed {rules.class_imbalance.max_ratio:g} ({key}.max_ratio)"
            threshold = f"<= {rules.class_imbalance.max_ratio:g}"
            if ratio is None:
                message = f"a declared label has no rows ({counts}); {allowed}"
                return CheckFailure(check, config.type, severity, column, "no rows", threshold, message)
            message = (
                f"the largest class has {ratio:.3g} times the rows of the smallest ({counts}); {allowed}"
            )
            return CheckFailure(check, config.type, severity, column, round(ratio, 4), threshold, message)
        if check == "group":
            return failure(count, "0 rows", f"{found} with no '{column}' (data.group_column)")
        observed = res.get("observed_value", count)
        return CheckFailure(
            check,
            config.type,
            severity,
            column,
            observed,
            str(config.kwargs),
            f"failed (observed {observed})",
        )


# ---------------------------------------------------------------------------------------------------
# Running the suite and writing the reports


def _check_of(result: Any) -> str:
    return str((result.expectation_config.meta or {})["check"])


def _label_counts(frame: pd.DataFrame, label: str, declared: tuple[str, ...]) -> dict[str, int]:
    if label not in frame.columns:
        return {}
    counts = frame[label].dropna().astype(str).value_counts()
    ordered = {value: int(counts.get(value, 0)) for value in declared}
    ordered.update({str(k): int(v) for k, v in counts.items() if k not in ordered})
    return ordered


def _run_suite(frame: pd.DataFrame, expectations: list[Any], docs_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Validate ``frame`` with an ephemeral context; build the Data Docs site into ``docs_dir``."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    project = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            DOCS_SITE: {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
            }
        },
    )
    context = gx.get_context(mode="ephemeral", project_config=project)
    batch = (
        context.data_sources.add_pandas("refinery")
        .add_dataframe_asset("labelled_data")
        .add_batch_definition_whole_dataframe("all_files")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="validate_labelled_data", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="refinery_checkpoint",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs", site_names=[DOCS_SITE])],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_ROWS_SHOWN},
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    result = next(iter(outcome.run_results.values()))
    return result, result.to_json_dict()


def validate_data(
    cfg: RunConfig, out_dir: Path, frame: pd.DataFrame | None = None, feedback_through: int = 0
) -> ValidationReport:
    """Check the run's labelled data against the data contract and write the reports.

    Args:
        cfg: The run configuration: ``cfg.data`` names the files, columns, labels and the contract.
        out_dir: Folder for ``validation.json``, ``report.html``, ``report.md`` and ``data_docs/``
            (created if needed; earlier reports there are replaced whole).
        frame: The training data, when already read (then only it is validated); by default every file
            of ``cfg.data.split_uris()`` is read, and the run's new labelled rows (see :func:`read_splits`).
        feedback_through: The newest service feedback id the run reads (with ``data.feedback``).

    Returns:
        The report; call :meth:`ValidationReport.raise_for_failure` to stop on ``error`` failures.

    Raises:
        DataError: A file cannot be read at all (missing, empty, corrupt, wrong encoding or delimiter).
    """
    data = cfg.data
    if frame is None:
        frame, files, _ = read_splits(data, cfg, feedback_through)
    else:
        frame, files = _union([frame.copy()], ["train"]), {"train": data.uri}
    frame.columns = [str(c) for c in frame.columns]
    if data.label_column in frame.columns:
        frame[data.label_column] = stringify(frame[data.label_column])
    columns = [c for c in frame.columns if c != SPLIT]

    derived = (
        derive_columns(frame, data) if data.text_column in frame.columns else pd.DataFrame(index=frame.index)
    )
    checked = pd.concat([frame, derived], axis=1)
    expectations, skipped = _build_expectations(data, columns, [*derived.columns, SPLIT])

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".validation-"))
    try:
        result, gx_json = _run_suite(checked, expectations, staging / "data_docs")
        summarise = _Summariser(checked, data).summarise
        failed = sorted(
            (r for r in result.results if not r.success),
            key=lambda r: (r.expectation_config.meta or {})["order"],
        )
        summaries = [summarise(r) for r in failed]
        statistics = {k: to_jsonable(v) for k, v in (result.statistics or {}).items()}
        report = ValidationReport(
            success=not skipped and not any(f.severity == "error" for f in summaries),
            files=files,
            row_count=len(frame),
            columns=columns,
            failures=[f for f in summaries if f.severity == "error"],
            warnings=[f for f in summaries if f.severity != "error"],
            passed=[
                c
                for c in dict.fromkeys(_check_of(r) for r in result.results)
                if c not in {f.check for f in summaries}
            ],
            skipped=skipped,
            label_counts=_label_counts(frame, data.label_column, data.labels),
            statistics=statistics,
            paths={
                "validation": str(out_dir / "validation.json"),
                "html": str(out_dir / "report.html"),
                "markdown": str(out_dir / "report.md"),
                "data_docs": str(out_dir / "data_docs" / "index.html"),
            },
        )
        (staging / "report.md").write_text(report.to_markdown(), encoding="utf-8")
        (staging / "report.html").write_text(report.to_html(), encoding="utf-8")
        write_json({**report.to_dict(), "great_expectations": gx_json}, staging / "validation.json")
        _publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _publish(staging: Path, out_dir: Path) -> None:
    """Move the finished reports from ``staging`` into ``out_dir``; validation.json goes last."""
    docs = out_dir / "data_docs"
    if docs.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir, prefix=".old-docs-"))
        os.replace(docs, old / "data_docs")
        shutil.rmtree(old, ignore_errors=True)
    os.replace(staging / "data_docs", docs)
    for name in ("report.md", "report.html", "validation.json"):
        os.replace(staging / name, out_dir / name)
