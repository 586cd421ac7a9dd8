"""Failed data-contract rules for people: Great Expectations results turned into :class:`CheckFailure`.

Each failed expectation of the suite (:mod:`refinery.data.suite`) becomes one sentence that says what is
wrong, what the contract allows and which config key to change, with up to ten offending rows and their
text. One function per rule writes that sentence (:data:`_DESCRIBE`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from refinery.config import DataConfig, ShareCheck
from refinery.data.suite import (
    ALPHA,
    CHARS,
    CONFLICTING,
    DAMAGED,
    EXACT_DUPLICATE_OF,
    LEAKED_FROM,
    NORMALISED_DUPLICATE_OF,
    SPLIT,
    row_numbers,
)
from refinery.results import Record

MAX_ROWS_SHOWN = 10
TEXT_SHOWN = 160


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
class CheckFailure(Record):
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


@dataclass(frozen=True)
class _Failed:
    """One failed expectation's result, read once, with the two ways to report it."""

    check: str
    expectation: str
    severity: str
    column: str | None
    meta: dict[str, Any]
    res: dict[str, Any]
    count: int  # rows breaking a row rule
    found: str  # ``count`` in words, with its share of the rows the rule looked at
    key: str  # the rule's config key
    data: DataConfig
    columns: list[str]  # the data's own columns
    offending: Callable[[dict[str, Any], str | None], list[OffendingRow]]

    def failure(self, observed: Any, threshold: str, message: str) -> CheckFailure:
        """A row rule's failure, with its offending rows."""
        # Derived columns are computed from the text: name the text column in the report.
        column = self.column
        data_column = self.data.text_column if column and column.startswith("__") else column
        rows = self.offending(self.res, column) if "partial_unexpected_index_list" in self.res else []
        return CheckFailure(
            self.check, self.expectation, self.severity, data_column, observed, threshold, message, rows
        )

    def table(self, column: str | None, observed: Any, threshold: str, message: str) -> CheckFailure:
        """A table or column rule's failure (no rows to show)."""
        return CheckFailure(self.check, self.expectation, self.severity, column, observed, threshold, message)


def _columns(f: _Failed) -> CheckFailure:
    message = f"column '{f.column}' ({f.meta.get('config_key')}) is missing; the data has columns {f.columns or '(none)'}"
    return f.table(f.column, "missing", "column present", message)


def _extra_columns(f: _Failed) -> CheckFailure:
    extra = (f.res.get("details") or {}).get("mismatched", {}).get("unexpected", [])
    message = f"unexpected column(s) {extra} besides the text, label, group and slice columns ({f.key}: {f.data.validation.extra_columns})"
    return f.table(None, extra, "no other columns", message)


def _text_type(f: _Failed) -> CheckFailure:
    kinds = sorted({type(v).__name__ for v in f.res.get("partial_unexpected_list") or []})
    message = (
        f"{f.found} whose '{f.column}' is not a string ({', '.join(kinds)}): is the text column mis-parsed?"
    )
    return f.failure(f.count, "every value a string", message)


def _missing_text(f: _Failed) -> CheckFailure:
    share = f.data.validation.missing_text.max_share
    message = f"{f.found} with missing or blank text; allowed {share:.2%} ({f.key}.max_share)"
    return f.failure(f.count, f"<= {share:.2%} of rows", message)


def _text_length(f: _Failed) -> CheckFailure:
    length = f.data.validation.text_length
    bounds = f"{length.min_chars}..{length.max_chars} characters"
    message = f"{f.found} with text outside {bounds}; allowed {length.max_share:.2%} ({f.key})"
    return f.failure(f.count, f"<= {length.max_share:.2%} of rows outside {bounds}", message)


# What the rows breaking a share rule do.
_SHARE_WORDS = {
    "exact_duplicates": "repeat an earlier row's text exactly",
    "normalised_duplicates": "repeat an earlier row's text once case, accents, punctuation and spacing are ignored",
    "conflicting_labels": "carry a text that also occurs with another label",
    "leakage": "of a held-out file share their normalised text with an earlier split (train before validation before test)",
    "encoding_damage": "hold U+FFFD replacement or control characters (is data.encoding={encoding!r} right?)",
}


def _share_rule(f: _Failed) -> CheckFailure:
    rule: ShareCheck = getattr(f.data.validation, f.check)
    what = _SHARE_WORDS[f.check].format(encoding=f.data.encoding)
    message = f"{f.found} {what}; allowed {rule.max_share:.2%} ({f.key}.max_share)"
    return f.failure(f.count, f"<= {rule.max_share:.2%} of rows", message)


def _alphabetic(f: _Failed) -> CheckFailure:
    alpha = f.data.validation.alphabetic
    message = f"{f.found} where letters are under {alpha.min_alpha:.0%} of the text (binary or mis-parsed column?); allowed {alpha.max_share:.2%} ({f.key})"
    return f.failure(
        f.count, f"<= {alpha.max_share:.2%} of rows under {alpha.min_alpha:.0%} letters", message
    )


def _min_rows(f: _Failed) -> CheckFailure:
    need = f.data.validation.min_rows.min
    observed = int(f.res.get("observed_value") or 0)
    message = f"the data has {_rows(observed)}, needs at least {need} ({f.key}.min)"
    return f.table(None, observed, f">= {need} rows", message)


def _labels(f: _Failed) -> CheckFailure:
    if f.meta.get("kind") == "missing":
        return f.failure(f.count, "0 rows", f"{f.found} with no '{f.column}'")
    distinct = [c["value"] for c in f.res.get("partial_unexpected_counts") or []]
    labels = _label_set(f.data.labels)
    message = f"{f.found} with labels outside {labels} (data.labels): {[_short(v, 40) for v in distinct[:MAX_ROWS_SHOWN]]}"
    if _looks_like_floats(distinct):
        message += "; they look like numbers written as floats"
    return f.failure(f.count, f"every value in {labels}", message)


def _min_rows_per_class(f: _Failed) -> CheckFailure:
    short = f.res.get("observed_value") or {}
    need = f.data.validation.min_rows_per_class.min
    labels = "; ".join(f"label '{value}' has {_rows(n)}" for value, n in short.items())
    message = f"{labels}, needs at least {need} per label ({f.key}.min)"
    return f.table(f.column, short, f">= {need} rows per label", message)


def _class_imbalance(f: _Failed) -> CheckFailure:
    max_ratio = f.data.validation.class_imbalance.max_ratio
    ratio = f.res.get("observed_value")
    counts = (f.res.get("details") or {}).get("counts", {})
    allowed = f"allowed {max_ratio:g} ({f.key}.max_ratio)"
    threshold = f"<= {max_ratio:g}"
    if ratio is None:
        return f.table(f.column, "no rows", threshold, f"a declared label has no rows ({counts}); {allowed}")
    message = f"the largest class has {ratio:.3g} times the rows of the smallest ({counts}); {allowed}"
    return f.table(f.column, round(ratio, 4), threshold, message)


def _group(f: _Failed) -> CheckFailure:
    return f.failure(f.count, "0 rows", f"{f.found} with no '{f.column}' (data.group_column)")


def _describe_other(f: _Failed, kwargs: dict[str, Any]) -> CheckFailure:
    observed = f.res.get("observed_value", f.count)
    return f.table(f.column, observed, str(kwargs), f"failed (observed {observed})")


# One function per rule of the suite: what its failure means, in words.
_DESCRIBE: dict[str, Callable[[_Failed], CheckFailure]] = {
    "columns": _columns,
    "extra_columns": _extra_columns,
    "text_type": _text_type,
    "missing_text": _missing_text,
    "text_length": _text_length,
    **{check: _share_rule for check in _SHARE_WORDS},
    "alphabetic": _alphabetic,
    "min_rows": _min_rows,
    "labels": _labels,
    "min_rows_per_class": _min_rows_per_class,
    "class_imbalance": _class_imbalance,
    "group": _group,
}


class Summariser:
    """Turns failed GX expectation results into :class:`CheckFailure` records with offending rows."""

    def __init__(self, frame: pd.DataFrame, data: DataConfig) -> None:
        self.frame = frame
        self.data = data
        self.rows = row_numbers(frame)
        self.total = len(frame)
        self.columns = [c for c in frame.columns if c != SPLIT and not c.startswith("__")]

    def offending(self, result: dict[str, Any], column: str | None) -> list[OffendingRow]:
        """Up to ten rows the result lists as breaking the rule, with their text and offending value."""
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
        """One failed expectation result as a :class:`CheckFailure`."""
        config = result.expectation_config
        meta = config.meta or {}
        check, severity = meta.get("check", config.type), meta.get("severity", "error")
        column = config.kwargs.get("column") or meta.get("column")
        exc = result.exception_info or {}
        if exc.get("raised_exception"):
            message = f"could not be evaluated: {exc.get('exception_message')}"
            return CheckFailure(check, config.type, severity, column, None, "evaluates", message)
        res = result.result or {}
        count = int(res.get("unexpected_count") or 0)
        failed = _Failed(
            check=check,
            expectation=config.type,
            severity=severity,
            column=column,
            meta=meta,
            res=res,
            count=count,
            # A map rule's share is of the rows it looked at (for leakage: the held-out rows).
            found=_share(count, int(res.get("element_count") or self.total)),
            key=f"data.validation.{check}",
            data=self.data,
            columns=self.columns,
            offending=self.offending,
        )
        describe = _DESCRIBE.get(check)
        return describe(failed) if describe else _describe_other(failed, config.kwargs)
