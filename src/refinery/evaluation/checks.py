"""Input checks shared by the evaluation's scoring functions.

The scores work on integer class indices ``0..k-1`` (the caller maps label strings to indices in the
declared label order), booleans, finite numbers and probability rows. Each check raises
:class:`~refinery.errors.DataError` with a message naming the argument at fault (lengths that differ,
empty input, an index outside ``0..k-1``, probability rows that do not sum to 1, ...), so every public
function reports bad input the same way before handing it to scikit-learn or numpy.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from refinery.errors import DataError

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: How far a probability row may sum from 1 (float32 softmax output is off by ~1e-7 per row).
PROBABILITY_SUM_TOLERANCE = 1e-5


def check_k(k: int) -> int:
    """``k``, the number of declared classes, as an int of at least 1."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise DataError(f"k (the number of classes) must be an integer, got {k!r}")
    if k < 1:
        raise DataError(f"k (the number of classes) must be at least 1, got {k}")
    return int(k)


def as_indices(values: npt.ArrayLike, k: int, what: str, *, ndim: int = 1) -> IntArray:
    """``values`` as an ``ndim``-D int64 array of class indices in ``0..k-1`` (``what`` names it)."""
    arr = np.asarray(values)
    if arr.ndim != ndim:
        raise DataError(f"{what} must be a {ndim}-D array of class indices, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{what} is empty")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{what} must hold integer class indices 0..{k - 1}, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= k)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        where = pos[0] if ndim == 1 else pos
        raise DataError(f"{what}[{where}] = {arr[pos]} is outside the class indices 0..{k - 1}")
    return arr.astype(np.int64, copy=False)


def same_length(*named: tuple[str, int]) -> None:
    """Check that every ``(name, length)`` pair has the first one's length."""
    first_name, first_len = named[0]
    for name, length in named[1:]:
        if length != first_len:
            raise DataError(f"{first_name} has {first_len} rows but {name} has {length}")


def _numeric(arr: np.ndarray) -> bool:
    """Whether ``arr`` holds integers or floats (booleans are not numbers here)."""
    return arr.dtype != np.bool_ and (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    )


def _vector(values: npt.ArrayLike, what: str, holding: str) -> np.ndarray:
    """``values`` as a non-empty 1-D array of ``holding`` (named in the message)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{what} must be a 1-D array of {holding}, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{what} is empty")
    return arr


def as_bool(values: npt.ArrayLike, what: str) -> BoolArray:
    """``values`` (booleans or 0/1) as a non-empty 1-D boolean array."""
    arr = _vector(values, what, "booleans")
    if arr.dtype == np.bool_:
        return arr
    if not _numeric(arr):
        raise DataError(f"{what} must hold booleans (or 0/1), got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"{what} must hold booleans (or 0/1), but {what}[{pos}] = {arr[pos]}")
    as_bool: BoolArray = arr == 1
    return as_bool


def as_finite(values: npt.ArrayLike, what: str) -> FloatArray:
    """``values`` as a non-empty 1-D float64 array of finite numbers."""
    arr = _vector(values, what, "numbers")
    if not _numeric(arr):
        raise DataError(f"{what} must hold numbers, got dtype {arr.dtype}")
    out = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(out)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"{what}[{pos}] = {out[pos]} is not a finite number")
    return out


def as_probabilities(probabilities: npt.ArrayLike, true_idx: npt.ArrayLike) -> tuple[FloatArray, IntArray]:
    """Probability rows ``(n, k)`` in [0, 1] summing to 1, and the ``n`` true class indices in ``0..k-1``."""
    arr = np.asarray(probabilities)
    if arr.ndim != 2:
        raise DataError(f"probabilities must be a 2-D array (rows, classes), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise DataError("probabilities is empty")
    if arr.shape[1] == 0:
        raise DataError("probabilities has no class columns")
    if not _numeric(arr):
        raise DataError(f"probabilities must hold numbers, got dtype {arr.dtype}")
    probs = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"probabilities[{row}, {col}] = {probs[row, col]} is not a number in [0, 1]")
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1.0) > PROBABILITY_SUM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise DataError(
            f"probabilities row {row} sums to {sums[row]:.6g}, not 1 (tolerance {PROBABILITY_SUM_TOLERANCE:g});"
            " pass softmax outputs, not logits"
        )
    k = probs.shape[1]
    true = as_indices(true_idx, k, "true_idx")
    same_length(("probabilities", probs.shape[0]), ("true_idx", true.shape[0]))
    return probs, true
