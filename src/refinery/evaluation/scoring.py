"""Scoring: every metric of one model from its class probabilities, and the challenger against the champion.

The computation behind the evaluate step (:mod:`refinery.evaluation.evaluate`), without models or files:
:func:`score` gives one model's :class:`~refinery.evaluation.metrics.ModelMetrics` (headline scores,
probability scores, slices), :func:`compare` the paired bootstrap and McNemar's test on the rows
:func:`comparison_rows` picks, :func:`no_change` whether the challenger is a copy of the champion, and
:func:`predictions_frame` the per-row table written as ``predictions.parquet``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from refinery.data.sources import DOMAIN_SLICE, NEW
from refinery.errors import DataError
from refinery.evaluation.curves import average_precision, expected_calibration_error, log_loss, roc_auc
from refinery.evaluation.metrics import LatencySummary, ModelMetrics, SliceScore, classification_metrics
from refinery.evaluation.result import Comparison
from refinery.evaluation.significance import mcnemar, paired_bootstrap
from refinery.evaluation.slices import length_bucket, slice_metrics

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from refinery.config import RunConfig

LENGTH_SLICE = "length"  # the slice "column" of text-length buckets


def label_indices(frame: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """Each row's ``label`` as its index in the declared ``labels`` (rows already checked to hold them)."""
    import numpy as np

    return frame["label"].map({label: i for i, label in enumerate(labels)}).to_numpy(dtype=np.int64)


def score(
    cfg: RunConfig,
    frame: pd.DataFrame,
    probabilities: np.ndarray,
    latency: LatencySummary | None = None,
    slice_columns: Sequence[str] = (),
) -> ModelMetrics:
    """Every metric of one model on one labelled set, from its class probabilities.

    Args:
        cfg: The run configuration (``data.labels``, ``evaluation``).
        frame: The rows: ``text``, ``label`` and the ``slice_columns``.
        probabilities: ``[rows, labels]`` in the declared label order.
        latency: Per-example latency, when measured.
        slice_columns: Columns of ``frame`` to score each value of; text-length buckets are always scored.
    """

    labels = tuple(cfg.data.labels)
    k = len(labels)
    true_idx = label_indices(frame, labels)
    pred_idx = probabilities.argmax(axis=1)
    base = classification_metrics(frame["label"].tolist(), [labels[i] for i in pred_idx], labels)
    auc = ap = None
    if k == 2 and len(set(true_idx.tolist())) == 2:  # the second declared label is the positive class
        auc = roc_auc(probabilities[:, 1], true_idx == 1)
        ap = average_precision(probabilities[:, 1], true_idx == 1)
    groups: dict[str, Sequence[object]] = {column: frame[column].tolist() for column in slice_columns}
    groups[LENGTH_SLICE] = length_bucket(frame["text"].tolist(), cfg.evaluation.length_buckets)
    slices: dict[str, dict[str, SliceScore]] = {
        column: {str(value): s for value, s in slice_metrics(true_idx, pred_idx, k, values).items()}
        for column, values in groups.items()
    }
    return replace(
        base,
        log_loss=log_loss(probabilities, true_idx),
        ece=expected_calibration_error(probabilities, true_idx, bins=cfg.evaluation.calibration_bins),
        roc_auc=auc,
        average_precision=ap,
        mean_latency_ms=latency.mean_ms if latency else None,
        p95_latency_ms=latency.p95_ms if latency else None,
        slices=slices,
    )


def comparison_rows(cfg: RunConfig, frame: pd.DataFrame) -> tuple[str, np.ndarray]:
    """Which test rows the significance tests compare on (``gate.significance.on``): ``("new", mask)``
    for the held-out new labelled rows, ``("all", mask)`` for every row.

    Raises:
        DataError: ``on`` is ``new`` but the test set holds no new rows.
    """
    import numpy as np

    on = cfg.gate.significance.on
    new = (
        (frame[DOMAIN_SLICE] == NEW).to_numpy()
        if DOMAIN_SLICE in frame.columns
        else np.zeros(len(frame), bool)
    )
    if on == "new" and not new.any():
        raise DataError(
            "gate.significance.on=new, but the test set holds no new labelled rows (data.incoming_uri,"
            " data.feedback)"
        )
    if on == "new" or (on == "auto" and new.any()):
        return "new", new
    return "all", np.ones(len(frame), dtype=bool)


def compare(cfg: RunConfig, frame: pd.DataFrame, challenger: np.ndarray, champion: np.ndarray) -> Comparison:
    """The paired bootstrap and McNemar's test of two models' probabilities on the same rows: the rows
    :func:`comparison_rows` picks."""

    on, rows = comparison_rows(cfg, frame)
    frame, challenger, champion = frame[rows], challenger[rows], champion[rows]
    labels = tuple(cfg.data.labels)
    true_idx = label_indices(frame, labels)
    ours, theirs = challenger.argmax(axis=1), champion.argmax(axis=1)
    significance = cfg.gate.significance
    return Comparison(
        on=on,
        rows=int(rows.sum()),
        bootstrap=paired_bootstrap(
            true_idx,
            ours,
            theirs,
            len(labels),
            resamples=significance.resamples,
            confidence=significance.confidence,
            seed=significance.seed,
        ),
        mcnemar=mcnemar(ours == true_idx, theirs == true_idx),
    )


def _weights_sha256(model_dir: Path) -> str | None:
    """One hash over a model folder's safetensors files (None when it has none, e.g. an adapter)."""
    from refinery.hashing import stream_sha256

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    digests = []
    for path in files:
        with path.open("rb") as fh:
            digests.append(f"{path.name}:{stream_sha256(fh)}")
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def no_change(
    challenger_dir: Path,
    champion_dir: Path,
    challenger: Sequence[np.ndarray],
    champion: Sequence[np.ndarray],
    who: str,
) -> str | None:
    """Why the challenger is no change from the champion, or None when it differs.

    It is no change when its weights hash the same as the champion's, or when it predicts the
    champion's label on every row both were scored on (``challenger[i]``/``champion[i]``: the
    probabilities of one scored set each, the test set and the retention set).
    """
    ours = _weights_sha256(challenger_dir)
    if ours is not None and ours == _weights_sha256(champion_dir):
        return f"the challenger's weights hash the same as {who}'s (sha256 {ours[:12]})"
    rows = sum(len(p) for p in challenger)
    same = all(
        (a.argmax(axis=1) == b.argmax(axis=1)).all() for a, b in zip(challenger, champion, strict=True)
    )
    if same:
        return f"the challenger predicts the same label as {who} on all {rows} scored rows"
    return None


def predictions_frame(
    frame: pd.DataFrame,
    labels: Sequence[str],
    challenger: np.ndarray,
    champion: np.ndarray | None,
    cfg: RunConfig,
) -> pd.DataFrame:
    """One row per test text: text, label, slices, length bucket, each model's prediction and probabilities."""
    import pandas as pd

    out = frame.copy()
    out[LENGTH_SLICE] = length_bucket(frame["text"].tolist(), cfg.evaluation.length_buckets)
    for role, probabilities in (("challenger", challenger), ("champion", champion)):
        if probabilities is None:
            out[f"{role}_pred"] = pd.Series([None] * len(frame), dtype="string")
            out[f"{role}_proba"] = pd.Series([None] * len(frame), dtype=object)
        else:
            out[f"{role}_pred"] = pd.Series([labels[i] for i in probabilities.argmax(axis=1)], dtype="string")
            out[f"{role}_proba"] = [row.tolist() for row in probabilities.astype(float)]
    return out
