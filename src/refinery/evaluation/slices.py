"""Slices of the test rows: text-length buckets, and the scores of each slice.

A slice is a value of a ``data.slice_columns`` column, a text-length bucket or a ``domain``; each is
scored with :func:`refinery.evaluation.metrics.macro_f1` over all declared classes and its accuracy.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from refinery.errors import DataError
from refinery.evaluation.checks import as_indices, check_k, same_length
from refinery.evaluation.metrics import SliceScore, macro_f1

#: Default text-length bucket edges in characters: "<=50 chars", "51-200 chars", ">200 chars".
DEFAULT_LENGTH_EDGES: tuple[int, ...] = (50, 200)


def _check_edges(edges: Iterable[int]) -> tuple[int, ...]:
    out = tuple(edges)
    if not out:
        raise DataError("length edges must not be empty")
    for edge in out:
        if isinstance(edge, bool) or not isinstance(edge, int | np.integer) or edge < 0:
            raise DataError(f"length edges must be non-negative integers, got {list(out)}")
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise DataError(f"length edges must be strictly increasing, got {list(out)}")
    return tuple(int(e) for e in out)


def length_bucket_names(edges: Iterable[int] = DEFAULT_LENGTH_EDGES) -> tuple[str, ...]:
    """Names of the buckets :func:`length_bucket` uses for ``edges``, shortest first.

    Raises:
        DataError: ``edges`` is empty, not strictly increasing, or holds a negative or non-integer value.
    """
    checked = _check_edges(edges)
    names = [f"<={checked[0]} chars"]
    for lo, hi in itertools.pairwise(checked):
        names.append(f"{hi} chars" if lo + 1 == hi else f"{lo + 1}-{hi} chars")
    names.append(f">{checked[-1]} chars")
    return tuple(names)


def length_bucket(texts: Iterable[str], edges: Iterable[int] = DEFAULT_LENGTH_EDGES) -> list[str]:
    """Bucket name of each text by its length in characters.

    With the default edges ``(50, 200)`` the buckets are ``"<=50 chars"``, ``"51-200 chars"`` and
    ``">200 chars"``; edge ``e`` closes a bucket, so a text of exactly ``e`` characters falls below it.

    Args:
        texts: The texts (an empty input gives an empty list).
        edges: Strictly increasing upper bounds, in characters, of every bucket but the last.

    Returns:
        One bucket name per text, from :func:`length_bucket_names`.

    Raises:
        DataError: A text is not a string, or ``edges`` is invalid.
    """
    checked = _check_edges(edges)
    names = length_bucket_names(checked)
    lengths = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"texts[{i}] is {type(text).__name__}, not a string")
        lengths.append(len(text))
    which = np.searchsorted(np.asarray(checked), np.asarray(lengths, dtype=np.int64), side="left")
    return [names[int(i)] for i in which]


def slice_metrics(
    true_idx: npt.ArrayLike, pred_idx: npt.ArrayLike, k: int, groups: Iterable[object]
) -> dict[str, SliceScore]:
    """Accuracy and macro-F1 of each slice of the rows, e.g. per length bucket or per source.

    Args:
        true_idx: True class indices, shape ``(n,)``.
        pred_idx: Predicted class indices, shape ``(n,)``.
        k: Number of declared classes.
        groups: One group key per row; keys are compared and named by ``str(key)`` (so a missing value
            becomes ``"None"`` or ``"nan"``, one slice).

    Returns:
        Slice name -> SliceScore, names in sorted order.

    Raises:
        DataError: The inputs are empty, differ in length, or hold an index outside ``0..k-1``.
    """
    k = check_k(k)
    true = as_indices(true_idx, k, "true_idx")
    pred = as_indices(pred_idx, k, "pred_idx")
    keys = [str(g) for g in groups]
    same_length(("true_idx", true.shape[0]), ("pred_idx", pred.shape[0]), ("groups", len(keys)))
    names, group = np.unique(np.asarray(keys, dtype=str), return_inverse=True)
    out = {}
    for i, name in enumerate(names):
        rows = group == i
        in_true, in_pred = true[rows], pred[rows]
        out[str(name)] = SliceScore(
            n=int(in_true.shape[0]),
            accuracy=float(np.mean(in_true == in_pred)),
            macro_f1=macro_f1(in_true, in_pred, k),
        )
    return out
