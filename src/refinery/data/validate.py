"""Data validation: a Great Expectations suite built from the run configuration.

The suite checks what training relies on: the text and label columns exist, every text is present and
not blank, every label is present and declared, and every declared label has enough rows. The run writes
three reports into the output folder:

- ``validation.json``: our summary (:class:`ValidationReport`) plus the full GX validation result,
- ``data_docs/``: the GX Data Docs site (open ``data_docs/index.html``),
- ``report.md``: a Markdown summary of each failed expectation with its column, observed value,
  threshold and a few offending values.

When a required column is missing, the expectations on that column cannot run; they are listed as
skipped and the missing column is reported as a failure of ``expect_column_to_exist``.
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
from refinery.data.load import read_table, stringify
from refinery.errors import DataValidationError
from refinery.results import read_json, to_jsonable, write_json

SUITE_NAME = "refinery_data"
DOCS_SITE = "refinery_docs"  # an ephemeral context reserves "local_site"
MAX_EXAMPLES = 5
BLANK_REGEX = r"^\s*$"


@dataclass(frozen=True)
class ExpectationFailure:
    """One failed expectation, summarised for people.

    Attributes:
        expectation: The GX expectation type, e.g. ``expect_column_values_to_be_in_set``.
        column: The column it checks (for a per-class row count: the label column).
        observed: What was found: the number of offending rows, or the observed row count.
        threshold: What was required, in words (``"0 rows"``, ``">= 20 rows"``, ...).
        examples: Up to five offending values (or row numbers, for missing values).
        message: One sentence saying what is wrong.
    """

    expectation: str
    column: str | None
    observed: Any
    threshold: str
    examples: list[str]
    message: str

    def describe(self) -> str:
        """``expectation(column): message``."""
        return f"{self.expectation}({self.column or 'table'}): {self.message}"


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one dataset."""

    success: bool
    data_uri: str
    row_count: int
    columns: list[str]
    failures: list[ExpectationFailure]
    statistics: dict[str, Any]
    label_counts: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)

    def raise_for_failure(self) -> None:
        """Raise :class:`DataValidationError` naming every failed expectation and its column.

        Raises:
            DataValidationError: The data failed at least one expectation.
        """
        if self.success:
            return
        details = "; ".join(f.describe() for f in self.failures)
        raise DataValidationError(f"data validation failed for {self.data_uri}: {details}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return to_jsonable(self)

    def write_json(self, path: Path) -> Path:
        """Write this report as JSON (atomically)."""
        return write_json(self, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """Rebuild a report from :meth:`to_dict` output (extra keys such as the GX result are ignored)."""
        return cls(
            success=bool(data["success"]),
            data_uri=str(data["data_uri"]),
            row_count=int(data["row_count"]),
            columns=list(data["columns"]),
            failures=[ExpectationFailure(**f) for f in data["failures"]],
            statistics=dict(data["statistics"]),
            label_counts=dict(data.get("label_counts", {})),
            skipped=list(data.get("skipped", [])),
            paths=dict(data.get("paths", {})),
        )

    @classmethod
    def read(cls, path: Path) -> ValidationReport:
        """Read a report from a ``validation.json`` written by :func:`validate_data`."""
        return cls.from_dict(read_json(path))

    def to_markdown(self) -> str:
        """The Markdown report: status, counts, each failed expectation, skipped expectations."""
        stats = self.statistics
        lines = [
            "# Data validation report",
            "",
            f"- **Status:** {'PASSED' if self.success else 'FAILED'}",
            f"- **Data:** `{self.data_uri}`",
            f"- **Rows:** {self.row_count}",
            f"- **Columns:** {', '.join(f'`{c}`' for c in self.columns) or '(none)'}",
            f"- **Expectations:** {stats.get('successful_expectations', 0)} of "
            f"{stats.get('evaluated_expectations', 0)} passed"
            + (f", {len(self.skipped)} skipped" if self.skipped else ""),
        ]
        if self.label_counts:
            counts = ", ".join(f"`{k}`: {v}" for k, v in self.label_counts.items())
            lines.append(f"- **Rows per label:** {counts}")
        if self.failures:
            lines += [
                "",
                "## Failed expectations",
                "",
                "| expectation | column | observed | threshold | examples |",
                "|---|---|---|---|---|",
            ]
            for f in self.failures:
                examples = ", ".join(f"`{_md_cell(e)}`" for e in f.examples) or "-"
                lines.append(
                    f"| `{f.expectation}` | `{f.column or '-'}` | {_md_cell(str(f.observed))} "
                    f"| {_md_cell(f.threshold)} | {examples} |"
                )
            lines += ["", "### What is wrong", ""]
            lines += [
                f"- `{f.expectation}` on `{f.column or 'table'}`: {_md_cell(f.message)}"
                for f in self.failures
            ]
            lines += ["", "Rows are numbered from 1, not counting a header line."]
        if self.skipped:
            lines += ["", "## Skipped expectations (their column is missing)", ""]
            lines += [f"- `{s}`" for s in self.skipped]
        if docs := self.paths.get("data_docs"):
            lines += ["", f"Great Expectations Data Docs: `{docs}`"]
        return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _listing(items: list[str], total: int) -> str:
    return ", ".join(items) + (", ..." if total > len(items) else "")


def _label_set(labels: tuple[str, ...]) -> str:
    return "{" + ", ".join(labels) + "}"


def _build_expectations(cfg: RunConfig, columns: list[str]) -> tuple[list[Any], list[str]]:
    """The suite's expectations for the columns present, and the ones skipped for missing columns."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    data = cfg.data
    text, label = data.text_column, data.label_column
    expectations: list[Any] = []
    skipped: list[str] = []
    for column, key in dict.fromkeys([(text, "data.text_column"), (label, "data.label_column")]):
        expectations.append(
            gxe.ExpectColumnToExist(
                column=column,
                meta={"check": "exists", "config_key": key},
                description=f"Column `{column}` exists",
            )
        )

    text_checks: list[Any] = [
        gxe.ExpectColumnValuesToNotBeNull(
            column=text, meta={"check": "text_null"}, description=f"Every row has a `{text}`"
        ),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column=text,
            regex=BLANK_REGEX,
            meta={"check": "text_blank"},
            description=f"No `{text}` is blank or whitespace only",
        ),
    ]
    label_checks: list[Any] = [
        gxe.ExpectColumnValuesToNotBeNull(
            column=label, meta={"check": "label_null"}, description=f"Every row has a `{label}`"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column=label,
            value_set=list(data.labels),
            meta={"check": "label_in_set"},
            description=f"Every `{label}` is one of {_label_set(data.labels)}",
        ),
    ]
    label_checks += [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=data.min_rows_per_class,
            row_condition=Column(label) == value,
            meta={"check": "class_rows", "label": value, "column": label},
            description=f"At least {data.min_rows_per_class} rows labelled `{value}`",
        )
        for value in data.labels
    ]
    for column, checks in ((text, text_checks), (label, label_checks)):
        if column in columns:
            expectations += checks
        else:
            skipped += [_skipped_name(e, column) for e in checks]
    # Reports list failures in suite order (columns first, then values, then class sizes).
    for i, expectation in enumerate(expectations):
        expectation.meta = {**(expectation.meta or {}), "order": i}
    return expectations, skipped


def _skipped_name(expectation: Any, column: str) -> str:
    meta = expectation.meta or {}
    suffix = f" == {meta['label']!r}" if "label" in meta else ""
    return f"{expectation.expectation_type}({column}{suffix})"


def _summarise(result: Any, cfg: RunConfig, columns: list[str]) -> ExpectationFailure:
    """Turn one failed GX expectation result into an :class:`ExpectationFailure`."""
    config = result.expectation_config
    meta = config.meta or {}
    check = meta.get("check", "")
    kind = config.type
    column = config.kwargs.get("column") or meta.get("column")
    res = result.result or {}
    exc = result.exception_info or {}
    if exc.get("raised_exception"):
        message = f"could not be evaluated: {exc.get('exception_message')}"
        return ExpectationFailure(kind, column, None, "evaluates", [], message)

    count = int(res.get("unexpected_count") or 0)
    rows = [f"row {i + 1}" for i in (res.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES]]
    if check == "exists":
        examples = [_short(c) for c in columns[:MAX_EXAMPLES]]
        message = (
            f"column '{column}' ({meta.get('config_key')}) is missing; "
            f"the data has columns {columns if columns else '(none)'}"
        )
        return ExpectationFailure(kind, column, "missing", "column present", examples, message)
    if check == "text_null":
        message = f"{_rows(count)} with no text ({_listing(rows, count)})"
        return ExpectationFailure(kind, column, count, "0 rows", rows, message)
    if check == "text_blank":
        values = res.get("partial_unexpected_list") or []
        examples = [f"{r}: {_short(v)}" for r, v in zip(rows, values, strict=False)] or rows
        message = f"{_rows(count)} with blank or whitespace-only text ({_listing(rows, count)})"
        return ExpectationFailure(kind, column, count, "0 rows", examples, message)
    if check == "label_null":
        message = f"{_rows(count)} with no label ({_listing(rows, count)})"
        return ExpectationFailure(kind, column, count, "0 rows", rows, message)
    if check == "label_in_set":
        counted = res.get("partial_unexpected_counts") or []
        distinct = [c["value"] for c in counted] or list(
            dict.fromkeys(res.get("partial_unexpected_list") or [])
        )
        examples = [_short(v) for v in distinct[:MAX_EXAMPLES]]
        labels = _label_set(cfg.data.labels)
        message = f"{_rows(count)} with labels outside {labels}: [{', '.join(examples)}]"
        return ExpectationFailure(kind, column, count, f"every value in {labels}", examples, message)
    if check == "class_rows":
        observed = int(res.get("observed_value") or 0)
        needed = cfg.data.min_rows_per_class
        message = f"label '{meta['label']}' has {_rows(observed)}, needs at least {needed} (data.min_rows_per_class)"
        return ExpectationFailure(kind, column, observed, f">= {needed} rows", [], message)
    observed = res.get("observed_value", count)
    return ExpectationFailure(kind, column, observed, str(config.kwargs), [], f"failed (observed {observed})")


def _label_counts(frame: pd.DataFrame, label: str, declared: tuple[str, ...]) -> dict[str, int]:
    if label not in frame.columns:
        return {}
    counts = frame[label].dropna().astype(str).value_counts()
    ordered = {value: int(counts.get(value, 0)) for value in declared}
    ordered.update({str(k): int(v) for k, v in counts.items() if k not in ordered})
    return ordered


def _run_suite(
    cfg: RunConfig, frame: pd.DataFrame, expectations: list[Any], docs_dir: Path
) -> tuple[Any, dict[str, Any]]:
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
        .add_batch_definition_whole_dataframe("whole_table")
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
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    result = next(iter(outcome.run_results.values()))
    return result, result.to_json_dict()


def validate_data(cfg: RunConfig, out_dir: Path, frame: pd.DataFrame | None = None) -> ValidationReport:
    """Validate the labelled data against the suite built from ``cfg.data`` and write the reports.

    Args:
        cfg: The run configuration (``cfg.data`` names the file, columns, labels and minimum rows).
        out_dir: Folder for ``validation.json``, ``report.md`` and ``data_docs/`` (created if needed).
        frame: The data, when already read; by default it is read with :func:`read_table`.

    Returns:
        The report; call :meth:`ValidationReport.raise_for_failure` to stop on failure.

    Raises:
        DataError: The input cannot be read at all (missing, empty, corrupt, wrong encoding).
    """
    data = cfg.data
    if frame is None:
        frame = read_table(data)
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    for column in dict.fromkeys((data.text_column, data.label_column)):
        if column in frame.columns:
            frame[column] = stringify(frame[column])
    frame = frame.reset_index(drop=True)
    columns = list(frame.columns)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".validation-"))
    try:
        expectations, skipped = _build_expectations(cfg, columns)
        result, gx_json = _run_suite(cfg, frame, expectations, staging / "data_docs")
        failed = sorted(
            (r for r in result.results if not r.success),
            key=lambda r: (r.expectation_config.meta or {}).get("order", len(expectations)),
        )
        failures = [_summarise(r, cfg, columns) for r in failed]
        statistics = {k: to_jsonable(v) for k, v in (result.statistics or {}).items()}
        statistics["skipped_expectations"] = len(skipped)
        report = ValidationReport(
            success=bool(result.success) and not skipped,
            data_uri=data.uri,
            row_count=len(frame),
            columns=columns,
            failures=failures,
            statistics=statistics,
            label_counts=_label_counts(frame, data.label_column, data.labels),
            skipped=skipped,
            paths={
                "validation": str(out_dir / "validation.json"),
                "report": str(out_dir / "report.md"),
                "data_docs": str(out_dir / "data_docs" / "index.html"),
            },
        )
        (staging / "report.md").write_text(report.to_markdown(), encoding="utf-8")
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
    os.replace(staging / "report.md", out_dir / "report.md")
    os.replace(staging / "validation.json", out_dir / "validation.json")
