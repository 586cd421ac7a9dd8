"""Numeric descriptors of texts: the profile that drift monitoring compares between training and serving.

The same function describes the training texts (the reference profile stored with each model) and a
window of served requests, so both sides of a drift test are computed identically. Everything is a
vectorised pandas string operation; a missing text is described as an empty one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DESCRIPTOR_COLUMNS: tuple[str, ...] = (
    "text_length",
    "word_count",
    "mean_word_length",
    "non_alpha_share",
    "uppercase_share",
    "digit_share",
    "exclamation_count",
    "question_count",
)

# Python's `re` has no \p{L}: "a word character that is neither a digit nor an underscore" is a letter.
_LETTER = r"[^\W\d_]"
# Upper-case letters of ASCII and Latin-1 (covers the languages the demo and most reviews are written in).
_UPPER = r"[A-ZÀ-ÖØ-Þ]"


def _share(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator as float, 0.0 where the denominator is 0."""
    num = numerator.to_numpy(dtype=float)
    den = denominator.to_numpy(dtype=float)
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return pd.Series(out, index=numerator.index)


def text_descriptors(texts: Sequence[str]) -> pd.DataFrame:
    """Describe each text with numeric features used for drift detection.

    Args:
        texts: The texts; ``None``/NaN entries are treated as empty strings.

    Returns:
        One row per text (RangeIndex, same order) with the columns of :data:`DESCRIPTOR_COLUMNS`:
        ``text_length`` (characters), ``word_count`` (whitespace-separated tokens),
        ``mean_word_length`` (non-space characters per word), ``non_alpha_share`` (share of characters
        that are neither letters nor whitespace), ``uppercase_share`` (share of letters that are
        upper case), ``digit_share`` (share of characters that are digits), ``exclamation_count`` and
        ``question_count``. Counts are int64, shares and means float64; shares of an empty text are 0.
    """
    s = pd.Series(list(texts), dtype=object).fillna("").astype(str)
    s.index = pd.RangeIndex(len(s))
    length = s.str.len().astype("int64")
    words = s.str.split().str.len().fillna(0).astype("int64")
    spaces = s.str.count(r"\s")
    letters = s.str.count(_LETTER)
    upper = s.str.count(_UPPER)
    digits = s.str.count(r"\d")
    frame = pd.DataFrame(
        {
            "text_length": length,
            "word_count": words,
            "mean_word_length": _share(length - spaces, words),
            "non_alpha_share": _share(length - letters - spaces, length),
            "uppercase_share": _share(upper, letters),
            "digit_share": _share(digits, length),
            "exclamation_count": s.str.count("!").astype("int64"),
            "question_count": s.str.count(r"\?").astype("int64"),
        },
        index=s.index,
    )
    return frame
