"""The validation report for people: a Markdown summary and a self-contained HTML page.

The HTML page carries its own stylesheet and no scripts, images or links to other hosts: the stock GX
Data Docs load jQuery, Bootstrap and Vega from CDNs and render unstyled offline and inside the Kubeflow
UI, which shows an HTML artifact in a sandboxed frame. Every value from the data is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from refinery.html import page

if TYPE_CHECKING:
    from refinery.data.findings import CheckFailure
    from refinery.data.validate import ValidationReport


def _files(report: ValidationReport) -> str:
    return ", ".join(f"{split}: `{uri}`" for split, uri in report.files.items())


def _qualified(report: ValidationReport) -> bool:
    return len(report.files) > 1


def _status(report: ValidationReport) -> str:
    if not report.success:
        return "FAILED"
    return "PASSED with warnings" if report.warnings else "PASSED"


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_failures(title: str, failures: list[CheckFailure], qualified: bool) -> list[str]:
    if not failures:
        return []
    lines = [
        "",
        f"## {title}",
        "",
        "| check | severity | column | observed | threshold |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| `{f.check}` | {f.severity} | `{f.column or '-'}` | {_md(f.observed)} | {_md(f.threshold)} |"
        for f in failures
    ]
    for f in failures:
        lines += ["", f"### `{f.check}` ({f.expectation})", "", _md(f.message)]
        if f.rows:
            lines += ["", "| row | text | finding |", "|---|---|---|"]
            lines += [f"| {r.where(qualified)} | {_md(r.text)} | {_md(r.value or '')} |" for r in f.rows]
    return lines


def render_markdown(report: ValidationReport) -> str:
    """The Markdown summary: status, counts, every failed rule with its offending rows."""
    stats = report.statistics
    lines = [
        "# Data validation report",
        "",
        f"- **Status:** {_status(report)}",
        f"- **Data:** {_files(report)}",
        f"- **Rows:** {report.row_count}",
        f"- **Columns:** {', '.join(f'`{c}`' for c in report.columns) or '(none)'}",
        f"- **Expectations:** {stats.get('successful_expectations', 0)} of "
        f"{stats.get('evaluated_expectations', 0)} passed; {len(report.failures)} error(s), "
        f"{len(report.warnings)} warning(s)"
        + (f", {len(report.skipped)} rule(s) skipped" if report.skipped else ""),
    ]
    if report.label_counts:
        lines.append(
            "- **Rows per label:** " + ", ".join(f"`{k}`: {v}" for k, v in report.label_counts.items())
        )
    qualified = _qualified(report)
    lines += _md_failures("Errors (the run stops)", report.failures, qualified)
    lines += _md_failures("Warnings (the run goes on)", report.warnings, qualified)
    if report.skipped:
        lines += ["", "## Skipped rules (their column is missing)", ""] + [f"- `{s}`" for s in report.skipped]
    if report.passed:
        lines += ["", "## Rules that held", "", ", ".join(f"`{p}`" for p in report.passed)]
    lines += ["", "Rows are numbered from 1 within their file, not counting a header line."]
    if docs := report.paths.get("data_docs"):
        lines += ["", f"Great Expectations Data Docs: `{docs}`"]
    return "\n".join(lines) + "\n"


def _html_failures(title: str, failures: list[CheckFailure], css: str, qualified: bool) -> str:
    if not failures:
        return ""
    out = [
        f"<h2>{escape(title)}</h2>",
        "<table><tr><th>check</th><th>severity</th><th>column</th><th>observed</th><th>threshold</th></tr>",
    ]
    for f in failures:
        out.append(
            f"<tr><td><code>{escape(f.check)}</code></td><td><span class='status {css}'>{escape(f.severity)}</span></td>"
            f"<td><code>{escape(f.column or '-')}</code></td><td class='num'>{escape(str(f.observed))}</td>"
            f"<td>{escape(f.threshold)}</td></tr>"
        )
    out.append("</table>")
    for f in failures:
        out.append(
            f"<h3><code>{escape(f.check)}</code> <span class='muted'>{escape(f.expectation)}</span></h3>"
        )
        out.append(f"<p class='msg'>{escape(f.message)}</p>")
        if f.rows:
            out.append("<table><tr><th>row</th><th>text</th><th>finding</th></tr>")
            out += [
                f"<tr><td>{escape(r.where(qualified))}</td><td>{escape(r.text)}</td><td>{escape(r.value or '')}</td></tr>"
                for r in f.rows
            ]
            out.append("</table>")
    return "\n".join(out)


def render_html(report: ValidationReport) -> str:
    """The self-contained HTML page: status, counts, label bars, failures with rows, rules that held."""
    stats = report.statistics
    status = _status(report)
    css = "failed" if not report.success else ("warning" if report.warnings else "passed")
    files = "".join(
        f"<tr><th>{escape(s)}</th><td><code>{escape(u)}</code></td></tr>" for s, u in report.files.items()
    )
    summary = (
        f"<table>{files}<tr><th>rows</th><td>{report.row_count}</td></tr>"
        f"<tr><th>columns</th><td>{escape(', '.join(report.columns) or '(none)')}</td></tr>"
        f"<tr><th>expectations</th><td>{stats.get('successful_expectations', 0)} of "
        f"{stats.get('evaluated_expectations', 0)} passed; {len(report.failures)} error(s), "
        f"{len(report.warnings)} warning(s), {len(report.skipped)} rule(s) skipped</td></tr></table>"
    )
    labels = ""
    if report.label_counts:
        top = max(report.label_counts.values()) or 1
        bars = "".join(
            f"<tr><td><code>{escape(k)}</code></td><td class='num'>{v}</td>"
            f"<td><span class='bar' style='width:{20 * v / top:.2f}rem'></span></td></tr>"
            for k, v in report.label_counts.items()
        )
        labels = f"<h2>Rows per label</h2><table><tr><th>label</th><th>rows</th><th></th></tr>{bars}</table>"
    qualified = _qualified(report)
    parts = [
        f"<h1>Data validation report <span class='status {css}'>{escape(status)}</span></h1>",
        summary,
        labels,
        _html_failures("Errors (the run stops)", report.failures, "failed", qualified),
        _html_failures("Warnings (the run goes on)", report.warnings, "warning", qualified),
    ]
    if report.skipped:
        items = "".join(f"<li><code>{escape(s)}</code></li>" for s in report.skipped)
        parts.append(f"<h2>Skipped rules (their column is missing)</h2><ul>{items}</ul>")
    if report.passed:
        parts.append(
            "<h2>Rules that held</h2><p>"
            + ", ".join(f"<code>{escape(p)}</code>" for p in report.passed)
            + "</p>"
        )
    parts.append(
        "<p class='muted'>Rows are numbered from 1 within their file, not counting a header line. "
        "The full Great Expectations result is in validation.json beside this page.</p>"
    )
    return page(f"Data validation: {status}", parts)
