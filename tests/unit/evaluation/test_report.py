"""The HTML evaluation report on constructed evaluations: self-contained, every section, escaped data."""

from __future__ import annotations

import re
from dataclasses import replace
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from refinery.config import RunConfig, parse_config, resolve
from refinery.errors import DataError
from refinery.evaluation.report import render_html
from refinery.evaluation.result import EvaluationResult, RetentionResult
from refinery.evaluation.scoring import compare, predictions_frame, score

BINARY = ("negative", "positive")
ODD = '<b>&"x'  # a label that is markup unless escaped
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}


def config(tmp_path: Path, labels: tuple[str, ...]) -> RunConfig:
    tree = {
        "state_dir": str(tmp_path / "state"),
        "data": {"uri": str(tmp_path / "data.csv"), "labels": list(labels), "slice_columns": ["category"]},
        "model": {"base": str(tmp_path / "model")},
        "evaluation": {"length_buckets": [12]},
        "gate": {"significance": {"resamples": 200}},
    }
    return resolve(parse_config(tree), tmp_path)


def rows(
    labels: tuple[str, ...], n: int, categories: tuple[str, ...] = ("phones", "phones", "laptops")
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [f"review {i}" + " long" * (i % 3) for i in range(n)],
            "label": [labels[i % len(labels)] for i in range(n)],
            "category": [categories[i % len(categories)] for i in range(n)],
        }
    )


def probabilities(frame: pd.DataFrame, labels: tuple[str, ...], share: float, seed: int) -> np.ndarray:
    """Seeded probabilities, right on about ``share`` of the rows, with confidences spread over (0.55, 0.99)."""
    rng = np.random.default_rng(seed)
    n, k = len(frame), len(labels)
    true_idx = frame["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()
    predicted = np.where(rng.random(n) < share, true_idx, (true_idx + rng.integers(1, k, n)) % k)
    confidence = rng.uniform(0.55, 0.99, n)
    out = np.repeat(((1 - confidence) / (k - 1))[:, None], k, axis=1)
    out[np.arange(n), predicted] = confidence
    return out


def evaluation(
    tmp_path: Path,
    labels: tuple[str, ...] = BINARY,
    *,
    champion: bool = True,
    retention: RetentionResult | None = None,
    frame: pd.DataFrame | None = None,
) -> tuple[EvaluationResult, pd.DataFrame]:
    cfg = config(tmp_path, labels)
    frame = rows(labels, 300) if frame is None else frame
    ours = probabilities(frame, labels, 0.85, 1)
    theirs = probabilities(frame, labels, 0.75, 2) if champion else None
    result = EvaluationResult(
        labels=labels,
        test_rows=len(frame),
        challenger=score(cfg, frame, ours, slice_columns=["category"]),
        champion=score(cfg, frame, theirs, slice_columns=["category"]) if theirs is not None else None,
        champion_version="3" if champion else None,
        comparison=compare(cfg, frame, ours, theirs) if theirs is not None else None,
        retention=retention,
    )
    return result, predictions_frame(frame, labels, ours, theirs, cfg)


class _Page(HTMLParser):
    """Tags left open or closed out of order, every id, and references that would fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attributes(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attributes(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def _attributes(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "iframe", "object", "embed", "link"):
            self.external.append(f"<{tag}>")
        for name, value in attrs:
            value = value or ""
            if name == "id":
                self.ids.append(value)
            local = name.rsplit(":", 1)[-1]
            if local in ("src", "href", "srcset", "data", "poster", "action") and not value.startswith(
                ("#", "data:")
            ):
                self.external.append(f"{tag} {name}={value}")
            if "url(" in value and not re.fullmatch(r"url\(#[^)]+\)", value):
                self.external.append(f"{tag} {name}={value}")


def check_page(html: str) -> _Page:
    """Assert the page is one well-formed, self-contained document."""
    assert html.startswith("<!DOCTYPE html>")
    for needle in ("<script", 'src="http', 'href="http', "<link", "@import", "<?xml"):
        assert needle not in html
    parsed = _Page()
    parsed.feed(html)
    parsed.close()
    assert parsed.errors == [] and parsed.stack == [], (parsed.errors, parsed.stack)
    assert parsed.external == []
    assert len(parsed.ids) == len(set(parsed.ids)), "ids of several inline plots must not clash"
    return parsed


def section(html: str, heading: str) -> str:
    """The markup from an <h2> to the next one."""
    start = html.index(f"<h2>{heading}</h2>")
    end = html.find("<h2>", start + 1)
    return html[start : end if end > 0 else len(html)]


# --------------------------------------------------------------------------------------------------------


def test_binary_report_with_a_champion_shows_every_number_and_plot(tmp_path: Path) -> None:
    result, predictions = evaluation(tmp_path)
    html = render_html(result, predictions, title="Evaluation of run 7")
    check_page(html)
    ours, theirs = result.challenger, result.champion
    assert theirs is not None and result.comparison is not None
    assert "<title>Evaluation of run 7</title>" in html
    assert "challenger against champion v3 on the same test rows" in html
    assert "<th>test rows</th><td>300</td>" in html

    headline = section(html, "Headline metrics")
    for metrics in (ours, theirs):
        for value in (metrics.accuracy, metrics.macro_f1, metrics.log_loss, metrics.ece, metrics.roc_auc):
            assert f"{value:.4f}" in headline
    assert f"{ours.macro_f1 - theirs.macro_f1:+.4f}" in headline
    assert "mean latency (ms)" in headline and "<td class='num'>—</td>" in headline  # not measured

    boot, test = result.comparison.bootstrap, result.comparison.mcnemar
    significance = section(html, "Significance")
    assert f"[{boot.low:+.4f}, {boot.high:+.4f}] over 200 paired resamples of 300 rows" in significance
    assert "95% bootstrap interval" in significance
    assert f"b = {test.b} rows, champion v3 alone on c = {test.c}" in significance
    assert (
        f"p = {test.p_value:.4g} ({'exact binomial' if test.method == 'exact' else 'chi-square'}"
        in significance
    )

    per_class = section(html, "Per-class scores")
    for label in BINARY:
        row = re.search(rf"<tr><td><code>{label}</code></td>.*?</tr>", per_class)
        assert row is not None
        assert f">{ours.per_class[label]['support']}<" in row.group(0)
        assert f"{theirs.per_class[label]['f1']:.4f}" in row.group(0)

    assert "id='confusion'><svg" in html
    curves = section(html, "ROC and precision-recall curves")
    assert "id='roc-pr'><svg" in curves
    assert f"challenger: ROC-AUC {ours.roc_auc:.4f}, average precision {ours.average_precision:.4f}" in curves
    assert f"champion v3: ROC-AUC {theirs.roc_auc:.4f}" in curves
    calibration = section(html, "Calibration")
    assert (
        "id='reliability'><svg" in calibration
        and f"challenger: ECE {ours.ece:.4f} over 15 bins" in calibration
    )

    slices = section(html, "Slices")
    phones, laptops = ours.slices["category"]["phones"], ours.slices["category"]["laptops"]
    assert phones.n == 200 and laptops.n == 100
    assert slices.index("<code>phones</code>") < slices.index("<code>laptops</code>"), "largest first"
    assert "<h3><code>length</code> (text length)</h3>" in slices and "&lt;=12 chars" in slices
    phone_row = re.search(r"<tr><td><code>phones</code></td>.*?</tr>", slices)
    assert phone_row is not None
    their_phones = theirs.slices["category"]["phones"]
    assert f"{phones.macro_f1:.4f}" in phone_row.group(0)
    assert f"{phones.macro_f1 - their_phones.macro_f1:+.4f}" in phone_row.group(0)

    assert "Retention set" not in html
    assert "most confident mistakes" in html


def test_first_model_renders_without_a_champion(tmp_path: Path) -> None:
    result, predictions = evaluation(tmp_path, champion=False)
    assert predictions["champion_proba"].isna().all()
    html = render_html(result, predictions)
    check_page(html)
    assert "challenger alone: first model, no champion" in html
    assert "<h2>Significance</h2>" not in html and "champion v" not in html
    assert "<th>difference</th>" not in section(html, "Headline metrics")
    assert f"{result.challenger.macro_f1:.4f}" in html
    assert "challenger: ROC-AUC" in html and "champion:" not in section(
        html, "ROC and precision-recall curves"
    )


def test_multiclass_report_skips_the_curves_escapes_labels_and_shows_retention(tmp_path: Path) -> None:
    labels = ("a", ODD, "c")
    cfg = config(tmp_path, labels)
    kept = rows(labels, 90, categories=("old",))
    retention = RetentionResult(
        uri="s3://bucket/earlier & older.csv",
        n=len(kept),
        challenger=score(cfg, kept, probabilities(kept, labels, 0.7, 5)),
        champion=score(cfg, kept, probabilities(kept, labels, 0.8, 6)),
    )
    frame = rows(labels, 240, categories=("phones", ODD))
    result, predictions = evaluation(tmp_path, labels, retention=retention, frame=frame)
    html = render_html(result, predictions)
    check_page(html)

    assert ODD not in html, "a label is never markup, not even inside a plot"
    assert f"<code>{escape(ODD)}</code>" in section(html, "Per-class scores")
    assert f"<tr><td><code>{escape(ODD)}</code></td>" in section(html, "Slices")
    curves = section(html, "ROC and precision-recall curves")
    assert "<svg" not in curves and "binary tasks only, and this task has 3 labels" in curves
    assert "id='confusion'><svg" in html and "id='reliability'><svg" in html

    kept_section = section(html, "Retention set")
    assert "<code>s3://bucket/earlier &amp; older.csv</code> (90 rows)" in kept_section
    assert f"{retention.challenger.macro_f1:.4f}" in kept_section
    assert retention.champion is not None
    assert f"{retention.challenger.macro_f1 - retention.champion.macro_f1:+.4f}" in kept_section


def test_predictions_read_back_from_parquet_give_the_same_page(tmp_path: Path) -> None:
    result, predictions = evaluation(tmp_path, champion=False)
    predictions.to_parquet(tmp_path / "predictions.parquet", index=False)
    again = pd.read_parquet(tmp_path / "predictions.parquet")
    assert isinstance(again["challenger_proba"].iloc[0], np.ndarray)
    html = render_html(result, predictions)
    assert render_html(result, again) == html, "the page is deterministic and reads parquet as written"


def test_empty_slices_and_skipped_significance_still_render(tmp_path: Path) -> None:
    result, predictions = evaluation(tmp_path)
    bare = replace(result, challenger=replace(result.challenger, slices={}), comparison=None)
    html = render_html(bare, predictions, mistakes=0)
    check_page(html)
    assert "No slices were scored." in html
    assert "Not computed for this evaluation (gate.significance.mode: off)" in html
    assert "most confident mistakes" not in html


def test_a_test_set_with_one_label_says_why_there_are_no_curves(tmp_path: Path) -> None:
    frame = rows(("positive",), 40)
    result, predictions = evaluation(tmp_path, frame=frame)
    html = render_html(result, predictions)
    check_page(html)
    assert "every test row is labelled <code>positive</code>" in section(
        html, "ROC and precision-recall curves"
    )


def test_predictions_that_do_not_match_the_evaluation_are_named(tmp_path: Path) -> None:
    result, predictions = evaluation(tmp_path, champion=False)
    with pytest.raises(DataError, match=r"lack column\(s\) \['challenger_proba'\]"):
        render_html(result, predictions.drop(columns=["challenger_proba"]))
    with pytest.raises(DataError, match="predictions have 10 rows but the evaluation scored 300"):
        render_html(result, predictions.head(10))
    relabelled = predictions.assign(label=predictions["label"].replace("positive", "neutral"))
    with pytest.raises(DataError, match=r"label\(s\) \['neutral'\] outside the evaluated labels"):
        render_html(result, relabelled)
    short = predictions.assign(challenger_proba=[[1.0]] * len(predictions))
    with pytest.raises(DataError, match="must hold 2 class probabilities per row"):
        render_html(result, short)
