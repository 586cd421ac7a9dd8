"""Data validation: the data contract, a Great Expectations suite built from ``cfg.data.validation``.

The suite runs over every labelled file of the run (``data.uri`` and, when given, ``data.validation_uri``
and ``data.test_uri``). :mod:`refinery.data.suite` builds it (derived columns, then one expectation per
rule, each with a severity in the GX result and in Data Docs); this module reads the files, runs the suite
and writes the reports; :mod:`refinery.data.findings` turns each failed expectation into a sentence with
the offending rows.

``error`` failures stop the run (:meth:`ValidationReport.raise_for_failure`); ``warning`` failures are
reported and the run goes on. The reports, published together into the output folder
(:func:`refinery.atomic.staged_dir`, ``validation.json`` last):

- ``validation.json``: our summary (:class:`ValidationReport`) plus the full GX validation result,
- ``report.html``: a self-contained page (no scripts, no external stylesheets: it renders offline and
  inside the Kubeflow UI),
- ``report.md``: the same summary in Markdown,
- ``data_docs/``: the GX Data Docs site (open ``data_docs/index.html``; it loads its styles from CDNs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from refinery.atomic import staged_dir
from refinery.config import DataConfig, RunConfig
from refinery.data.findings import MAX_ROWS_SHOWN, CheckFailure, Summariser
from refinery.data.load import read_table, stringify
from refinery.data.suite import SPLIT, build_expectations, derive_columns
from refinery.errors import DataValidationError
from refinery.results import Record, read_json, to_jsonable, write_json

SUITE_NAME = "refinery_data"
DOCS_SITE = "refinery_docs"  # an ephemeral context reserves "local_site"
VALIDATION_JSON = "validation.json"


@dataclass(frozen=True)
class ValidationReport(Record):
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

    @classmethod
    def read(cls, path: Path) -> ValidationReport:
        """Read a report from a ``validation.json`` written by :func:`validate_data` (the GX result in it is
        not read)."""
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
# Reading


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
            (created if needed; earlier reports there are replaced whole, other files are left alone).
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
    expectations, skipped = build_expectations(data, columns, [*derived.columns, SPLIT])

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Merge, not replace: the folder may be a KFP output artifact or hold other files.
    with staged_dir(out_dir, mode="merge", last=VALIDATION_JSON) as staging:
        result, gx_json = _run_suite(checked, expectations, staging / "data_docs")
        summaries = _summarise(result, Summariser(checked, data))
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
            statistics={k: to_jsonable(v) for k, v in (result.statistics or {}).items()},
            paths={
                "validation": str(out_dir / VALIDATION_JSON),
                "html": str(out_dir / "report.html"),
                "markdown": str(out_dir / "report.md"),
                "data_docs": str(out_dir / "data_docs" / "index.html"),
            },
        )
        (staging / "report.md").write_text(report.to_markdown(), encoding="utf-8")
        (staging / "report.html").write_text(report.to_html(), encoding="utf-8")
        write_json({**report.to_dict(), "great_expectations": gx_json}, staging / VALIDATION_JSON)
    return report


def _summarise(result: Any, summariser: Summariser) -> list[CheckFailure]:
    """The failed expectations, in suite order, as :class:`CheckFailure` records."""
    failed = sorted(
        (r for r in result.results if not r.success),
        key=lambda r: (r.expectation_config.meta or {})["order"],
    )
    return [summariser.summarise(r) for r in failed]
