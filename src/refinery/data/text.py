"""Text rules shared by validation, preparation and the benchmarks: one definition of "the same text".

Three levels of sameness are used:

- *exact*: the text as read,
- *clean* (:func:`clean_texts`): Unicode NFC, invisible characters removed, whitespace collapsed; this is
  the text preparation keeps and training sees,
- *normalised* (:func:`comparison_keys`): the clean text case-folded, with accents, punctuation and
  symbols dropped; two reviews differing only in those are near-duplicates, and one in the training
  split and one in the test split is leakage.

Every function works on a whole pandas Series at once (vectorised string methods), so a million rows
take seconds, not minutes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from refinery.data.load import stringify

# Invisible characters that carry no meaning in a review but make equal texts differ.
_INVISIBLE = "[\u200b\u2060\ufeff]"
# C0 and C1 control characters other than tab, newline and carriage return.
_CONTROL = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
_REPLACEMENT = "\ufffd"
_DAMAGE = f"[{_REPLACEMENT}\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
_LETTER = r"[^\W\d_]"
_COMBINING_MARK = "[\u0300-\u036f]"


def as_text(texts: pd.Series) -> pd.Series:
    """Strings, with missing values as empty strings (numbers and other values turned into text)."""
    return stringify(texts).fillna("").astype(str)


def clean_texts(texts: pd.Series) -> pd.Series:
    """Unicode NFC, invisible characters removed, whitespace runs collapsed to one space, ends stripped.

    Missing values become empty strings.
    """
    return (
        as_text(texts)
        .str.normalize("NFC")
        .str.replace(_INVISIBLE, "", regex=True)
        # Runs of two or more, and single non-space whitespace: a lone space (most of them) is left be.
        .str.replace(r"\s{2,}|[^\S ]", " ", regex=True)
        .str.strip()
    )


def comparison_keys(texts: pd.Series, *, clean: bool = False) -> pd.Series:
    """The normalised form two texts share when they differ only in case, accents, punctuation,
    symbols or spacing (``"Great  movie!!"`` and ``"great movie"`` give ``"great movie"``).

    Args:
        texts: The texts.
        clean: The texts are already the output of :func:`clean_texts` (skips doing that again).
    """
    return (
        (texts if clean else clean_texts(texts))
        .str.casefold()
        .str.normalize("NFKD")
        .str.replace(_COMBINING_MARK, "", regex=True)
        .str.replace(r"[\W_]+", " ", regex=True)
        .str.strip()
    )


def key_hashes(keys: pd.Series) -> pd.Series:
    """64-bit hashes of texts (or keys), index kept: sets of a million hashes stay small and fast."""
    return pd.Series(pd.util.hash_array(keys.to_numpy(dtype=object)), index=keys.index)


def first_occurrence(hashes: pd.Series) -> pd.Series:
    """For each row, the position of the first row with the same hash when that is an earlier row;
    missing (``<NA>``) for the first occurrence itself."""
    # factorize numbers values in order of first appearance, so the k-th first occurrence has code k.
    codes, _ = pd.factorize(hashes.to_numpy())
    is_first = ~pd.Series(codes).duplicated().to_numpy()
    first = np.flatnonzero(is_first)[codes]
    return pd.Series(first, index=hashes.index, dtype="Int64").mask(is_first)


def damaged_characters(texts: pd.Series) -> pd.Series:
    """Per text, how many U+FFFD replacement characters and control characters it holds (the marks
    a wrong encoding or a binary column leaves)."""
    return as_text(texts).str.count(_DAMAGE)


def alphabetic_share(texts: pd.Series) -> pd.Series:
    """Per text, the share of its non-space characters that are letters (1.0 for an empty text, which
    other rules catch)."""
    s = as_text(texts)
    # Deleting runs is much faster than counting single matches (str.count lists every match).
    length = s.str.len()
    letters = length - s.str.replace(f"{_LETTER}+", "", regex=True).str.len()
    visible = s.str.replace(r"\s+", "", regex=True).str.len()
    return (letters / visible.where(visible > 0)).fillna(1.0)
