"""The evaluation report for people: one self-contained HTML page, an artifact of the evaluate step.

The page compares the challenger with the champion on the same test rows: headline metrics and their
difference, the bootstrap interval and McNemar's test, per-class scores, confusion matrices, ROC and
precision-recall curves (binary tasks), a reliability diagram, every slice and the retention set, then the
challenger's most confident mistakes. Numbers come from the :class:`EvaluationResult`; curves from the
per-row probabilities in the predictions frame.

Plots come from :mod:`refinery.evaluation.plots` as inline SVG, the same byte for byte on every render
of the same inputs. Every value from the data (labels, slice values, texts, the retention URI) is
HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

import numpy as np

from refinery.config import LOWER_IS_BETTER
from refinery.errors import DataError
from refinery.evaluation.plots import (
    ScoredModel,
    champion_name,
    clip,
    confusion_matrix_figure,
    curves_figure,
    reliability_figure,
    svg,
)
from refinery.evaluation.scoring import LENGTH_SLICE
from refinery.html import page

if TYPE_CHECKING:
    import pandas as pd

    from refinery.evaluation.checks import FloatArray, IntArray
    from refinery.evaluation.metrics import ModelMetrics
    from refinery.evaluation.result import EvaluationResult

DEFAULT_TITLE = "Model evaluation"
DASH = "—"  # shown for a value that was not measured

_HEADLINE = (
    ("accuracy", "accuracy", 4),
    ("macro_f1", "macro-F1", 4),
    ("log_loss", "log loss", 4),
    ("ece", "expected calibration error", 4),
    ("roc_auc", "ROC-AUC", 4),
    ("average_precision", "average precision", 4),
    ("mean_latency_ms", "mean latency (ms)", 2),
    ("p95_latency_ms", "p95 latency (ms)", 2),
)
_CSS = """
.plot{margin:.6rem 0 1.2rem}.plot svg{max-width:100%;height:auto}figcaption{font-size:.85rem;color:#57606a}
td.better{color:#2e7d32;font-weight:600}td.worse{color:#c62828;font-weight:600}
td.text{max-width:36rem;overflow-wrap:anywhere}
"""


# --------------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _num(value: float | None, digits: int = 4) -> str:
    return f"<td class='num'>{_fmt(value, digits)}</td>"


def _diff(ours: float | None, theirs: float | None, *, lower_is_better: bool = False, digits: int = 4) -> str:
    """A difference cell, challenger minus champion, green when the challenger is better."""
    if ours is None or theirs is None:
        return f"<td class='num'>{DASH}</td>"
    delta = ours - theirs
    shown = f"{delta:+.{digits}f}"
    if float(shown) == 0.0:  # a difference that rounds to zero is neither better nor worse
        return f"<td class='num'>{shown}</td>"
    better = delta < 0 if lower_is_better else delta > 0
    return f"<td class='num {'better' if better else 'worse'}'>{shown}</td>"


def _code(value: object) -> str:
    return f"<code>{escape(str(value))}</code>"


# --------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------


def _probabilities(predictions: pd.DataFrame, column: str, k: int) -> FloatArray | None:
    """The ``[rows, k]`` probabilities of one model, or None when the column is absent or all null."""
    if column not in predictions.columns:
        return None
    values = predictions[column].tolist()
    # A row holds a list (a numpy array once read back from parquet); a model that was not scored has
    # None, NaN or pd.NA in every row.
    held = [isinstance(v, list | tuple | np.ndarray) for v in values]
    if not any(held):
        return None
    if not all(held):
        row = held.index(False)
        raise DataError(
            f"predictions column {column!r} holds {values[row]!r} in row {row}, not a list of probabilities"
        )
    try:
        out = np.asarray([np.asarray(v, dtype=np.float64) for v in values])
    except (TypeError, ValueError) as exc:
        raise DataError(f"predictions column {column!r} does not hold lists of probabilities: {exc}") from exc
    if out.ndim != 2 or out.shape[1] != k:
        raise DataError(
            f"predictions column {column!r} must hold {k} class probabilities per row (one per label),"
            f" got shape {out.shape}"
        )
    return out


def _true_indices(predictions: pd.DataFrame, result: EvaluationResult) -> IntArray:
    missing = [c for c in ("label", "challenger_proba") if c not in predictions.columns]
    if missing:
        raise DataError(
            f"predictions lack column(s) {missing}; found {list(predictions.columns)}"
            " (pass the frame predictions_frame returns, or predictions.parquet)"
        )
    if len(predictions) != result.test_rows:
        raise DataError(
            f"predictions have {len(predictions)} rows but the evaluation scored {result.test_rows} test rows"
        )
    index = {label: i for i, label in enumerate(result.labels)}
    labels = [str(v) for v in predictions["label"].tolist()]
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(
            f"predictions column 'label' holds label(s) {unknown} outside the evaluated labels"
            f" {list(result.labels)}"
        )
    return np.asarray([index[v] for v in labels], dtype=np.int64)


def _models(result: EvaluationResult, predictions: pd.DataFrame) -> list[ScoredModel]:
    k = len(result.labels)
    out = []
    roles: list[tuple[str, str, ModelMetrics | None]] = [
        ("challenger", "challenger", result.challenger),
        ("champion", champion_name(result), result.champion),
    ]
    for role, name, metrics in roles:
        if metrics is None:
            continue
        probabilities = _probabilities(predictions, f"{role}_proba", k)
        predicted: list[str | None] = [None] * len(predictions)
        if probabilities is not None:
            predicted = [result.labels[int(i)] for i in probabilities.argmax(axis=1)]
        out.append(ScoredModel(role, name, metrics, probabilities, predicted))
    return out


# --------------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------------


def _figure(drawn: str, plot_id: str, caption: str) -> str:
    return f"<figure class='plot' id='{plot_id}'>{drawn}<figcaption>{caption}</figcaption></figure>"


def _header(result: EvaluationResult, title: str) -> str:
    compared = (
        f"challenger against {escape(champion_name(result))} on the same test rows"
        if result.champion is not None
        else "challenger alone: first model, no champion"
    )
    labels = ", ".join(_code(label) for label in result.labels)
    rows = [
        ("compared", compared),
        ("test rows", str(result.test_rows)),
        (f"labels ({len(result.labels)})", labels),
    ]
    if len(result.labels) == 2:
        rows.append(("positive class", f"{_code(result.labels[1])} (the second label)"))
    body = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f"<h1>{escape(title)}</h1><table>{body}</table>"


def _headline(result: EvaluationResult, models: Sequence[ScoredModel]) -> str:
    champion = len(models) > 1
    head = "<tr><th>metric</th>" + "".join(f"<th>{escape(m.name)}</th>" for m in models)
    head += "<th>difference</th></tr>" if champion else "</tr>"
    rows = []
    for metric, name, digits in _HEADLINE:
        lower = metric in LOWER_IS_BETTER
        hint = "lower is better" if lower else "higher is better"
        values = [m.metrics.value(metric) for m in models]
        cells = "".join(_num(v, digits) for v in values)
        if champion:
            cells += _diff(values[0], values[1], lower_is_better=lower, digits=digits)
        rows.append(f"<tr><th>{name} <span class='muted'>({hint})</span></th>{cells}</tr>")
    note = (
        "<p class='muted'>Difference: challenger minus champion; green where the challenger is better."
        f" {DASH}: not measured.</p>"
    )
    return "<h2>Headline metrics</h2><table>" + head + "".join(rows) + "</table>" + note


def _comparison(result: EvaluationResult) -> str:
    if result.champion is None:
        return ""
    comparison = result.comparison
    if comparison is None:
        return (
            "<h2>Significance</h2><p class='muted'>Not computed for this evaluation"
            " (gate.significance.mode: off).</p>"
        )
    boot, test = comparison.bootstrap, comparison.mcnemar
    who = escape(champion_name(result))
    if boot.low > 0:
        reading = "the interval lies above 0: the challenger's macro-F1 is significantly higher"
    elif boot.high < 0:
        reading = "the interval lies below 0: the challenger's macro-F1 is significantly lower"
    else:
        reading = "the interval includes 0: no significant macro-F1 difference"
    method = "exact binomial" if test.method == "exact" else "chi-square, continuity-corrected"
    rows = [
        ("macro-F1 difference (challenger minus champion)", f"{boot.difference:+.4f}"),
        (
            f"{boot.confidence:.0%} bootstrap interval",
            f"[{boot.low:+.4f}, {boot.high:+.4f}] over {boot.resamples} paired resamples of"
            f" {boot.n} rows (seed {boot.seed}); {reading}",
        ),
        ("share of resamples where the challenger is not better", f"{boot.share_not_better:.4f}"),
        (
            "McNemar's test",
            f"challenger alone right on b = {test.b} rows, {who} alone on c = {test.c};"
            f" statistic {test.statistic:.4g}, p = {test.p_value:.4g} ({method})",
        ),
    ]
    body = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f"<h2>Significance</h2><table>{body}</table>"


def _per_class(result: EvaluationResult, models: Sequence[ScoredModel]) -> str:
    span = "".join(f"<th colspan='3'>{escape(m.name)}</th>" for m in models)
    head = f"<tr><th rowspan='2'>label</th><th rowspan='2'>support</th>{span}</tr>"
    head += "<tr>" + "<th>precision</th><th>recall</th><th>F1</th>" * len(models) + "</tr>"
    rows = []
    for label in result.labels:
        scores = result.challenger.per_class.get(label, {})
        cells = "".join(
            _num(m.metrics.per_class.get(label, {}).get(key))
            for m in models
            for key in ("precision", "recall", "f1")
        )
        support = scores.get("support")
        rows.append(f"<tr><td>{_code(label)}</td>{_num(support, 0)}{cells}</tr>")
    return "<h2>Per-class scores</h2><table>" + head + "".join(rows) + "</table>"


def _confusion(result: EvaluationResult) -> str:
    drawn = svg(confusion_matrix_figure(result), "cm")
    caption = "Rows are true labels, columns predicted; shading is the share of the true class."
    return "<h2>Confusion matrices</h2>" + _figure(drawn, "confusion", caption)


def _curves(result: EvaluationResult, models: Sequence[ScoredModel], true_idx: IntArray) -> str:
    heading = "<h2>ROC and precision-recall curves</h2>"
    k = len(result.labels)
    if k != 2:
        return (
            heading + f"<p class='muted'>Not drawn: ROC and precision-recall curves are drawn for binary"
            f" tasks only, and this task has {k} labels.</p>"
        )
    positive = (true_idx == 1).astype(np.int64)
    if positive.min() == positive.max():
        present = escape(result.labels[int(true_idx[0])])
        return (
            heading + f"<p class='muted'>Not drawn: every test row is labelled <code>{present}</code>,"
            " and a curve needs both labels present.</p>"
        )
    if all(m.probabilities is None for m in models):
        return heading + "<p class='muted'>Not drawn: the predictions hold no probabilities.</p>"
    fig, captions = curves_figure(models, positive, result.labels[1])
    return heading + _figure(svg(fig, "curves"), "roc-pr", "; ".join(captions))


def _calibration(
    result: EvaluationResult, models: Sequence[ScoredModel], true_idx: IntArray, bins: int
) -> str:
    heading = "<h2>Calibration</h2>"
    if all(m.probabilities is None for m in models):
        return heading + "<p class='muted'>Not drawn: the predictions hold no probabilities.</p>"
    fig, captions = reliability_figure(models, true_idx, len(result.labels), bins)
    caption = (
        "Points on the diagonal are calibrated: of the rows predicted with confidence p, a share p is"
        " right. Below: how the rows spread over the bins. " + "; ".join(captions)
    )
    return heading + _figure(svg(fig, "calibration"), "reliability", caption)


def _slices(result: EvaluationResult) -> str:
    heading = "<h2>Slices</h2>"
    slices = result.challenger.slices
    if not slices:
        return heading + "<p class='muted'>No slices were scored.</p>"
    champion = result.champion
    if champion is not None:
        head = (
            "<tr><th rowspan='2'>value</th><th rowspan='2'>n</th>"
            "<th colspan='3'>accuracy</th><th colspan='3'>macro-F1</th></tr><tr>"
            + "<th>challenger</th><th>champion</th><th>difference</th>" * 2
            + "</tr>"
        )
    else:
        head = "<tr><th>value</th><th>n</th><th>accuracy</th><th>macro-F1</th></tr>"
    out = [heading]
    for column, scores in slices.items():
        what = " (text length)" if column == LENGTH_SLICE else ""
        theirs = champion.slices.get(column, {}) if champion is not None else {}
        rows = []
        for value, score in sorted(scores.items(), key=lambda item: (-item[1].n, item[0])):
            cells = f"<td>{_code(value)}</td>{_num(score.n, 0)}"
            if champion is not None:
                other = theirs.get(value)
                their_acc = other.accuracy if other else None
                their_f1 = other.macro_f1 if other else None
                cells += _num(score.accuracy) + _num(their_acc) + _diff(score.accuracy, their_acc)
                cells += _num(score.macro_f1) + _num(their_f1) + _diff(score.macro_f1, their_f1)
            else:
                cells += _num(score.accuracy) + _num(score.macro_f1)
            rows.append(f"<tr>{cells}</tr>")
        out.append(f"<h3>{_code(column)}{what}</h3><table>{head}{''.join(rows)}</table>")
    out.append(
        "<p class='muted'>Largest slices first. A slice's macro-F1 averages over every label, so a label"
        " absent from a small slice pulls it down.</p>"
    )
    return "".join(out)


def _retention(result: EvaluationResult) -> str:
    retention = result.retention
    if retention is None:
        return ""
    scored = [("challenger", retention.challenger)]
    if retention.champion is not None:
        scored.append((champion_name(result), retention.champion))
    head = "<tr><th>model</th><th>n</th><th>accuracy</th><th>macro-F1</th></tr>"
    rows = [
        f"<tr><td>{escape(name)}</td>{_num(m.n, 0)}{_num(m.accuracy)}{_num(m.macro_f1)}</tr>"
        for name, m in scored
    ]
    if retention.champion is not None:
        rows.append(
            "<tr><td>difference</td><td></td>"
            + _diff(retention.challenger.accuracy, retention.champion.accuracy)
            + _diff(retention.challenger.macro_f1, retention.champion.macro_f1)
            + "</tr>"
        )
    return (
        f"<h2>Retention set</h2><p>Earlier-domain rows from {_code(retention.uri)} ({retention.n} rows), the"
        " check against forgetting.</p><table>" + head + "".join(rows) + "</table>"
    )


def _mistakes(
    result: EvaluationResult,
    predictions: pd.DataFrame,
    models: Sequence[ScoredModel],
    true_idx: IntArray,
    limit: int,
) -> str:
    challenger = models[0]
    if limit <= 0 or challenger.probabilities is None:
        return ""
    heading = "<h2>The challenger's most confident mistakes</h2>"
    confidence = challenger.probabilities.max(axis=1)
    wrong = np.flatnonzero(challenger.probabilities.argmax(axis=1) != true_idx)
    if wrong.size == 0:
        return heading + "<p class='muted'>None: the challenger gets every test row right.</p>"
    picked = wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]
    champion = models[1] if len(models) > 1 else None
    head = "<tr><th>text</th><th>label</th><th>challenger</th>"
    head += f"<th>{escape(champion.name)}</th></tr>" if champion is not None else "</tr>"
    texts = predictions["text"].tolist() if "text" in predictions.columns else [""] * len(predictions)
    rows = []
    for i in picked:
        row = int(i)
        cells = f"<td class='text'>{escape(clip(str(texts[row]), 300))}</td><td>{_code(result.labels[int(true_idx[row])])}</td>"
        cells += (
            f"<td>{_code(challenger.predicted[row])} <span class='muted'>{confidence[row]:.4f}</span></td>"
        )
        if champion is not None:
            theirs = champion.predicted[row]
            cells += f"<td>{_code(theirs) if theirs is not None else DASH}</td>"
        rows.append(f"<tr>{cells}</tr>")
    note = f"<p class='muted'>Up to {limit} wrong predictions, highest confidence first; texts cut at 300 characters.</p>"
    return heading + "<table>" + head + "".join(rows) + "</table>" + note


def render_html(
    result: EvaluationResult,
    predictions: pd.DataFrame,
    *,
    title: str = DEFAULT_TITLE,
    calibration_bins: int = 15,
    mistakes: int = 10,
) -> str:
    """The self-contained HTML evaluation report.

    Args:
        result: Challenger (and champion) metrics, their comparison, slices and retention scores.
        predictions: The frame :func:`~refinery.evaluation.scoring.predictions_frame` returns (or
            ``predictions.parquet`` read back): ``text``, ``label``, ``challenger_proba`` (class
            probabilities in ``result.labels`` order) and, with a champion, ``champion_proba``.
        title: The page's heading and title.
        calibration_bins: Bins of the reliability diagram; pass ``evaluation.calibration_bins`` so its
            ECE matches the headline table's.
        mistakes: How many of the challenger's most confident mistakes to list (0: none).

    Returns:
        One HTML document with no scripts and nothing fetched from elsewhere.

    Raises:
        DataError: The predictions lack a column, have another row count than ``result.test_rows``, hold a
            label outside ``result.labels`` or probabilities of the wrong shape.
    """
    if isinstance(calibration_bins, bool) or not isinstance(calibration_bins, int) or calibration_bins < 1:
        raise DataError(f"calibration_bins must be a positive integer, got {calibration_bins!r}")
    true_idx = _true_indices(predictions, result)
    models = _models(result, predictions)
    body = [
        _header(result, title),
        _headline(result, models),
        _comparison(result),
        _per_class(result, models),
        _confusion(result),
        _curves(result, models, true_idx),
        _calibration(result, models, true_idx, calibration_bins),
        _slices(result),
        _retention(result),
        _mistakes(result, predictions, models, true_idx, mistakes),
        "<p class='muted'>Numbers from evaluation.json; curves and mistakes from predictions.parquet,"
        " both beside this page.</p>",
    ]
    return page(title, body, css=_CSS.strip())
