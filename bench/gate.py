"""Benchmark: evaluation and promotion gate on 10,000 test examples, model inference excluded.

What it measures
    Everything ``evaluate`` and ``gate`` do after the two models have predicted: from the class
    probabilities of a challenger and a champion on N test rows (default 10,000; seeded, about 88% and
    86% right, two slice columns plus text-length buckets), :func:`refinery.evaluation.evaluate.score`
    for each model (accuracy, macro-F1, per-class scores, confusion matrix, log loss, calibration error,
    ROC-AUC, average precision, every slice), :func:`~refinery.evaluation.evaluate.compare` (a paired
    bootstrap of the macro-F1 difference with B resamples, default 1,000, and McNemar's test),
    :func:`refinery.evaluation.gate.decide` with every rule on, and the HTML report with its plots.

    The baseline: the same numbers the straightforward way with scikit-learn, in this file: its metric
    functions per model and per slice, and a bootstrap that draws B resamples and calls ``f1_score``
    twice on each. It makes no report. Both must agree on the bootstrap interval to within 0.01 (they
    draw different resamples) and on every headline metric exactly.

How
    The inputs are generated once; each side then runs R times (``--repeat``, default 3) in this process
    and the best time is kept (``time.perf_counter``). No model is loaded: latency is not part of it.

Target (issue 6): evaluation + gate under 30 s for 10,000 examples with 1,000 resamples.

Run:  python bench/gate.py [--rows N] [--resamples B] [--repeat R] [--seed S]
Exit: 0 when the target holds and both sides agree, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TARGET_S = 30.0
LABELS = ("negative", "positive")


def generate(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A test frame (text, label, two slice columns) and two models' class probabilities."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 2, rows)
    words = rng.integers(3, 80, rows)
    frame = pd.DataFrame(
        {
            "text": ["word " * int(n) for n in words],
            "label": np.array(LABELS)[true],
            "category": rng.choice(["phones", "laptops", "audio", "cameras", "home"], rows),
            "market": rng.choice(["de", "fr", "uk"], rows, p=[0.5, 0.3, 0.2]),
        }
    )

    def model(right_share: float) -> np.ndarray:
        right = rng.random(rows) < right_share
        confidence = rng.uniform(0.55, 0.99, rows)
        predicted = np.where(right, true, 1 - true)
        probabilities = np.empty((rows, 2))
        probabilities[np.arange(rows), predicted] = confidence
        probabilities[np.arange(rows), 1 - predicted] = 1 - confidence
        return probabilities

    return frame, model(0.88), model(0.86)


def config(resamples: int, state: Path) -> Any:
    from refinery.config import parse_config, resolve

    tree = {
        "state_dir": str(state),
        "data": {
            "uri": str(state / "data.csv"),
            "labels": list(LABELS),
            "slice_columns": ["category", "market"],
        },
        "model": {"base": str(state / "model")},
        "gate": {
            "min": {"macro_f1": 0.7, "accuracy": 0.7, "roc_auc": 0.7},
            "max": {"ece": 0.3, "log_loss": 1.0},
            "max_regression": {"macro_f1": 0.01, "accuracy": 0.01},
            "significance": {"mode": "not_worse", "resamples": resamples},
            "slices": {"min_size": 100, "max_regression": 0.05},
        },
    }
    return resolve(parse_config(tree), state)


def refinery_side(cfg: Any, frame: pd.DataFrame, ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    """score x 2, compare, decide and the HTML report: what the two steps do after inference."""
    from refinery.evaluation.evaluate import EvaluationResult, compare, predictions_frame, score
    from refinery.evaluation.gate import decide
    from refinery.evaluation.report import render_html

    slices = list(cfg.data.slice_columns)
    result = EvaluationResult(
        labels=LABELS,
        test_rows=len(frame),
        challenger=score(cfg, frame, ours, slice_columns=slices),
        champion=score(cfg, frame, theirs, slice_columns=slices),
        champion_version="1",
        comparison=compare(cfg, frame, ours, theirs),
    )
    decision = decide(cfg.gate, result)
    render_html(result, predictions_frame(frame, LABELS, ours, theirs, cfg))
    assert result.champion is not None and result.comparison is not None
    return {
        "rules": float(len(decision.rules)),
        "challenger_accuracy": result.challenger.accuracy,
        "challenger_macro_f1": result.challenger.macro_f1,
        "champion_macro_f1": result.champion.macro_f1,
        "challenger_roc_auc": float(result.challenger.roc_auc or 0.0),
        "challenger_log_loss": float(result.challenger.log_loss or 0.0),
        "low": result.comparison.bootstrap.low,
        "high": result.comparison.bootstrap.high,
    }


def sklearn_side(
    resamples: int, frame: pd.DataFrame, ours: np.ndarray, theirs: np.ndarray
) -> dict[str, float]:
    """The same numbers with scikit-learn's functions and a loop over resamples."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    true = (frame["label"] == LABELS[1]).to_numpy().astype(int)
    out: dict[str, float] = {}
    for role, probabilities in (("challenger", ours), ("champion", theirs)):
        predicted = probabilities.argmax(axis=1)
        out[f"{role}_accuracy"] = float(accuracy_score(true, predicted))
        out[f"{role}_macro_f1"] = float(f1_score(true, predicted, average="macro", labels=[0, 1]))
        precision_recall_fscore_support(true, predicted, labels=[0, 1], zero_division=0)
        confusion_matrix(true, predicted, labels=[0, 1])
        out[f"{role}_roc_auc"] = float(roc_auc_score(true, probabilities[:, 1]))
        out[f"{role}_log_loss"] = float(log_loss(true, probabilities, labels=[0, 1]))
        for column in ("category", "market"):
            for _, rows in frame.groupby(column).indices.items():
                f1_score(true[rows], predicted[rows], average="macro", labels=[0, 1])
                accuracy_score(true[rows], predicted[rows])
    a, b = ours.argmax(axis=1), theirs.argmax(axis=1)
    rng = np.random.default_rng(0)
    differences = []
    for _ in range(resamples):
        rows = rng.integers(0, len(true), len(true))
        differences.append(
            f1_score(true[rows], a[rows], average="macro", labels=[0, 1])
            - f1_score(true[rows], b[rows], average="macro", labels=[0, 1])
        )
    out["low"], out["high"] = (float(v) for v in np.percentile(differences, [2.5, 97.5]))
    return out


def best_time(repeat: int, run: Callable[[], dict[str, float]]) -> tuple[float, dict[str, float]]:
    times, result = [], {}
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    frame, ours, theirs = generate(args.rows, args.seed)
    with tempfile.TemporaryDirectory(prefix="refinery-bench-gate-") as tmp:
        cfg = config(args.resamples, Path(tmp))
        ours_s, ours_result = best_time(args.repeat, lambda: refinery_side(cfg, frame, ours, theirs))
    base_s, base_result = best_time(args.repeat, lambda: sklearn_side(args.resamples, frame, ours, theirs))

    print(f"{args.rows} test rows, {args.resamples} bootstrap resamples, best of {args.repeat}")
    print(f"refinery evaluate + gate + report: {ours_s:.2f} s ({ours_result['rules']:.0f} gate rules)")
    print(f"scikit-learn baseline (no report): {base_s:.2f} s")
    print(f"ratio baseline/refinery: {base_s / ours_s:.1f}x")
    print(
        f"bootstrap interval: refinery [{ours_result['low']:+.4f}, {ours_result['high']:+.4f}],"
        f" baseline [{base_result['low']:+.4f}, {base_result['high']:+.4f}]"
    )
    headline = [k for k in base_result if k.startswith("challenger_") or k == "champion_macro_f1"]
    disagree = [k for k in headline if abs(base_result[k] - ours_result[k]) > 1e-9]
    interval_gap = max(
        abs(base_result["low"] - ours_result["low"]), abs(base_result["high"] - ours_result["high"])
    )
    checks = {
        f"under {TARGET_S:.0f} s ({ours_s:.2f} s)": ours_s < TARGET_S,
        f"headline metrics equal scikit-learn's ({', '.join(disagree) or 'all equal'})": not disagree,
        f"bootstrap bounds within 0.01 of the baseline's ({interval_gap:.4f})": interval_gap <= 0.01,
    }
    for what, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
