"""Benchmark: evaluation and promotion gate on 10,000 test examples, model inference excluded.

What it measures
    Everything ``evaluate`` and ``gate`` do after the two models have predicted: from the class
    probabilities of a challenger and a champion on N test rows (default 10,000; seeded, about 88% and
    86% right, two slice columns plus text-length buckets), :func:`refinery.evaluation.scoring.score`
    for each model (accuracy, macro-F1, per-class scores, confusion matrix, log loss, calibration error,
    ROC-AUC, average precision, every slice), :func:`~refinery.evaluation.scoring.compare` (a paired
    bootstrap of the macro-F1 difference with B resamples, default 1,000, and McNemar's test),
    :func:`refinery.evaluation.gate.decide` with every rule on, and the HTML report with its plots.

    The baseline: the same numbers the straightforward way with scikit-learn, in this file: its metric
    functions per model and per slice, and a bootstrap that draws the same B resamples (the same seeded
    generator) and calls ``f1_score`` twice on each. It makes no report. Both must agree on the bootstrap
    interval to within 1e-9 and on every headline metric exactly.

    The paired bootstrap alone is also timed against that baseline (issue 22): the project keeps its
    own vectorised macro-F1 only there, because scikit-learn per resample is measurably slower, and
    this line is the figure.

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
from typing import Any, TypeVar

import numpy as np
import pandas as pd

T = TypeVar("T")
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
    from refinery.evaluation.gate import decide
    from refinery.evaluation.report import render_html
    from refinery.evaluation.result import EvaluationResult
    from refinery.evaluation.scoring import compare, predictions_frame, score

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


def sklearn_bootstrap(
    true: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int, seed: int
) -> tuple[float, float]:
    """The 95% interval of macro-F1(a) - macro-F1(b), ``f1_score`` twice per resample.

    The resamples are the ones ``paired_bootstrap`` draws: one ``(resamples, n)`` stream of
    ``numpy.random.default_rng(seed)``.
    """
    from sklearn.metrics import f1_score

    draws = np.random.default_rng(seed).integers(0, len(true), size=(resamples, len(true)), dtype=np.int64)
    differences = [
        f1_score(true[rows], a[rows], average="macro", labels=[0, 1], zero_division=0)
        - f1_score(true[rows], b[rows], average="macro", labels=[0, 1], zero_division=0)
        for rows in draws
    ]
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


def vectorised_bootstrap(
    true: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int, seed: int
) -> tuple[float, float]:
    """The same interval from refinery's paired bootstrap."""
    from refinery.evaluation.significance import paired_bootstrap

    result = paired_bootstrap(true, a, b, 2, resamples=resamples, seed=seed)
    return result.low, result.high


def sklearn_side(
    resamples: int, seed: int, frame: pd.DataFrame, ours: np.ndarray, theirs: np.ndarray
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
    out["low"], out["high"] = sklearn_bootstrap(
        true, ours.argmax(axis=1), theirs.argmax(axis=1), resamples, seed
    )
    return out


def best_time(repeat: int, run: Callable[[], T]) -> tuple[float, T]:
    """The best of ``repeat`` timed runs (at least one) and the last run's result."""
    times = []
    for _ in range(max(1, repeat)):
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
    seed = cfg.gate.significance.seed
    base_s, base_result = best_time(
        args.repeat, lambda: sklearn_side(args.resamples, seed, frame, ours, theirs)
    )
    # The paired bootstrap alone, on the same rows and the same resamples.
    true = (frame["label"] == LABELS[1]).to_numpy().astype(np.int64)
    a, b = ours.argmax(axis=1), theirs.argmax(axis=1)
    boot_s, boot = best_time(args.repeat, lambda: vectorised_bootstrap(true, a, b, args.resamples, seed))
    loop_s, loop = best_time(args.repeat, lambda: sklearn_bootstrap(true, a, b, args.resamples, seed))

    print(f"{args.rows} test rows, {args.resamples} bootstrap resamples, best of {args.repeat}")
    print(f"refinery evaluate + gate + report: {ours_s:.2f} s ({ours_result['rules']:.0f} gate rules)")
    print(f"scikit-learn baseline (no report): {base_s:.2f} s")
    print(f"ratio baseline/refinery: {base_s / ours_s:.1f}x")
    print(
        f"paired bootstrap alone: vectorised {boot_s:.3f} s, scikit-learn f1_score per resample"
        f" {loop_s:.2f} s, ratio {loop_s / boot_s:.0f}x"
    )
    print(
        f"bootstrap interval: refinery [{ours_result['low']:+.4f}, {ours_result['high']:+.4f}],"
        f" baseline [{base_result['low']:+.4f}, {base_result['high']:+.4f}]"
    )
    headline = [k for k in base_result if k.startswith("challenger_") or k == "champion_macro_f1"]
    disagree = [k for k in headline if abs(base_result[k] - ours_result[k]) > 1e-9]
    interval_gap = max(
        abs(base_result["low"] - ours_result["low"]),
        abs(base_result["high"] - ours_result["high"]),
        abs(boot[0] - loop[0]),
        abs(boot[1] - loop[1]),
    )
    checks = {
        f"under {TARGET_S:.0f} s ({ours_s:.2f} s)": ours_s < TARGET_S,
        f"headline metrics equal scikit-learn's ({', '.join(disagree) or 'all equal'})": not disagree,
        f"bootstrap bounds within 1e-9 of the baseline's ({interval_gap:.2g})": interval_gap <= 1e-9,
        f"vectorised bootstrap faster than scikit-learn per resample ({loop_s / boot_s:.0f}x)": boot_s
        < loop_s,
    }
    for what, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
