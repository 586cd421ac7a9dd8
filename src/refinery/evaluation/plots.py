"""The evaluation's plots: confusion matrices, ROC and precision-recall curves, a reliability diagram.

Drawn on bare matplotlib ``Figure`` objects (no pyplot state). The HTML report
(:mod:`refinery.evaluation.report`) embeds them as inline SVG through :func:`svg`, which renames the
element ids per plot, so several plots share one document without clashing and the page is the same
byte for byte on every render of the same inputs; the evaluate step saves the confusion matrices as a
PNG. A ``$`` in text drawn on a plot is escaped so matplotlib does not read it as mathtext.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

import numpy as np

from refinery.evaluation.curves import (
    average_precision,
    calibration_report,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from refinery.evaluation.checks import FloatArray, IntArray
    from refinery.evaluation.metrics import ModelMetrics
    from refinery.evaluation.result import EvaluationResult

_COLOURS = {"challenger": "#2b6cb0", "champion": "#c05621"}


@dataclass(frozen=True)
class ScoredModel:
    """One model as the report and its plots show it."""

    role: str  # "challenger" or "champion": picks the colour
    name: str  # as shown, e.g. "champion v3"
    metrics: ModelMetrics
    probabilities: FloatArray | None  # [rows, labels], from the predictions frame
    predicted: list[str | None]


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plot_text(text: str, limit: int = 24) -> str:
    """Text for a plot: shortened, with ``$`` escaped so matplotlib draws it instead of reading mathtext."""
    return clip(text, limit).replace("$", r"\$")


def champion_name(result: EvaluationResult) -> str:
    return f"champion v{result.champion_version}" if result.champion_version else "champion"


_ID = re.compile(r'\bid="([^"]+)"')
_REFERENCE = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')


def svg(fig: Figure, prefix: str) -> str:
    """The figure as an inline ``<svg>`` element: no XML prolog or metadata, ids renamed ``prefix-N``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue().decode("utf-8")
    text = text[text.index("<svg") :]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    # matplotlib names glyphs by font and clip paths by a random salt: the first clash between two plots
    # in one page, the second differs on every render.
    renamed = {old: f"{prefix}-{i}" for i, old in enumerate(dict.fromkeys(_ID.findall(text)))}
    return _REFERENCE.sub(lambda m: m.group(1) + renamed.get(m.group(2), m.group(2)), text)


def confusion_matrix_figure(result: EvaluationResult) -> Figure:
    """The challenger's (and the champion's) confusion matrix, side by side.

    Cells are shaded by the share of their true class (row-normalised) and annotated with the count and
    that share (the count alone beyond 12 labels), so classes of different sizes read alike. The cells
    are vector quads, sharp at any zoom.
    """
    from matplotlib.figure import Figure

    panels = [("challenger", result.challenger)]
    if result.champion is not None:
        panels.append((champion_name(result), result.champion))
    k = len(result.labels)
    ticks = [plot_text(label) for label in result.labels]
    side = min(12.0, max(3.6, 1.2 + 0.6 * k))
    fontsize = 9 if k <= 6 else 7 if k <= 12 else 6
    fig = Figure(figsize=(side * len(panels) + 1.2, side + 0.9), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    mesh = None
    edges = np.arange(k + 1) - 0.5
    for ax, (name, metrics) in zip(axes, panels, strict=True):
        counts = np.asarray(metrics.confusion_matrix, dtype=np.float64)
        rows = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
        mesh = ax.pcolormesh(edges, edges, shares, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{int(counts[i, j])}\n{shares[i, j]:.0%}" if k <= 12 else str(int(counts[i, j])),
                    ha="center",
                    va="center",
                    color="white" if shares[i, j] > 0.55 else "black",
                    fontsize=fontsize,
                )
        ax.set_xlim(-0.5, k - 0.5)
        ax.set_ylim(k - 0.5, -0.5)  # first label at the top, as a matrix is read
        ax.set_aspect("equal")
        ax.set_xticks(range(k), ticks, rotation=30 if k > 3 else 0, ha="right" if k > 3 else "center")
        ax.set_yticks(range(k), ticks)
        ax.set_xlabel("predicted label")
        ax.set_ylabel("true label")
        ax.set_title(
            f"{plot_text(name, 40)}\nmacro-F1 {metrics.macro_f1:.4f} · accuracy {metrics.accuracy:.4f}",
            fontsize=10,
        )
    if mesh is not None:
        fig.colorbar(mesh, ax=list(axes), shrink=0.8, label="share of the true class")
    return fig


def curves_figure(
    models: Sequence[ScoredModel], positive: IntArray, positive_label: str
) -> tuple[Figure, list[str]]:
    """ROC and precision-recall curves of every model with probabilities; also one caption line each."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 4.4), layout="constrained")
    roc_ax, pr_ax = fig.subplots(1, 2)
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="#8c959f", linewidth=1, label="chance")
    prevalence = float(positive.mean())
    pr_ax.axhline(
        prevalence, linestyle="--", color="#8c959f", linewidth=1, label=f"chance ({prevalence:.4f})"
    )
    captions = []
    for model in models:
        if model.probabilities is None:
            continue
        scores = model.probabilities[:, 1]
        fpr, tpr, _ = roc_curve(scores, positive)
        precision, recall, _ = precision_recall_curve(scores, positive)
        auc, ap = roc_auc(scores, positive), average_precision(scores, positive)
        colour, name = _COLOURS[model.role], plot_text(model.name, 40)
        roc_ax.plot(fpr, tpr, color=colour, linewidth=1.8, label=f"{name} (AUC {auc:.4f})")
        pr_ax.plot(
            recall,
            precision,
            color=colour,
            linewidth=1.8,
            drawstyle="steps-post",
            label=f"{name} (AP {ap:.4f})",
        )
        captions.append(f"{escape(model.name)}: ROC-AUC {auc:.4f}, average precision {ap:.4f}")
    positive_text = plot_text(positive_label, 40)
    roc_ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate")
    roc_ax.set_title(f"ROC curve (positive class: {positive_text})", fontsize=10)
    pr_ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    pr_ax.set_title(f"Precision-recall curve (positive class: {positive_text})", fontsize=10)
    roc_ax.legend(loc="lower right", fontsize=8)
    pr_ax.legend(loc="lower left", fontsize=8)
    return fig, captions


def reliability_figure(
    models: Sequence[ScoredModel], true_idx: IntArray, k: int, bins: int
) -> tuple[Figure, list[str]]:
    """Reliability diagram (accuracy against mean confidence per bin) over a histogram of the confidences."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="#8c959f", linewidth=1, label="perfectly calibrated")
    drawn: list[tuple[ScoredModel, FloatArray]] = []
    for model in models:
        if model.probabilities is not None:
            drawn.append((model, model.probabilities))
    width = 1.0 / bins / max(1, len(drawn))
    captions = []
    for slot, (model, probabilities) in enumerate(drawn):
        report = calibration_report(probabilities, true_idx, bins=bins)
        filled = [b for b in report.bins if b.count]
        colour, name = _COLOURS[model.role], plot_text(model.name, 40)
        top.plot(
            [b.mean_confidence for b in filled],
            [b.accuracy for b in filled],
            marker="o",
            markersize=4,
            color=colour,
            linewidth=1.6,
            label=f"{name} (ECE {report.ece:.4f})",
        )
        bottom.bar(
            [b.low + width * (slot + 0.5) for b in report.bins],
            [b.count / report.n for b in report.bins],
            width=width,
            color=colour,
            alpha=0.8,
        )
        captions.append(f"{escape(model.name)}: ECE {report.ece:.4f} over {bins} bins")
    # The top-class probability of k classes is at least 1/k: the axis starts a little below that.
    top.set(xlim=(math.floor(10 / k) / 10, 1.0), ylim=(0, 1.02), ylabel="accuracy in the bin")
    top.set_title("Reliability: accuracy against the top-class probability", fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    bottom.set(xlabel="confidence (top-class probability)", ylabel="share of rows")
    return fig, captions
