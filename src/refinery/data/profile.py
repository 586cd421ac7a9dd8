"""The data profile of a training split: the summary kept with the data and with the model version.

It describes what the model was trained on in numbers a person (or a drift check) can compare with
later data: the distributions of text length and word count, the label distribution and vocabulary
statistics. It is written as ``profile.json`` next to ``reference.parquet`` (the per-text descriptors
drift monitoring tests against) and registered with the model version beside it.

Words are counted the way :func:`~refinery.monitoring.descriptors.text_descriptors` counts them
(whitespace-separated); the vocabulary is made of case-folded tokens of letters and digits, so
``"Great,"`` and ``"great"`` are one type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from refinery.results import Record

QUANTILES: tuple[int, ...] = (0, 5, 25, 50, 75, 95, 100)
HISTOGRAM_BINS = 20
TOP_TOKENS = 50
# A token is a run of letters and digits, with inner apostrophes kept ("don't" is one token).
_TOKEN = "[^\\W_]+(?:['\u2019][^\\W_]+)*"


@dataclass(frozen=True)
class Histogram:
    """Counts of values in equal-width bins: ``counts[i]`` values lie in ``[edges[i], edges[i + 1])``
    (the last bin includes its right edge)."""

    edges: list[float]
    counts: list[int]


@dataclass(frozen=True)
class Distribution:
    """A numeric distribution: mean, quantiles (keys ``p0`` ... ``p100``) and a histogram."""

    mean: float
    quantiles: dict[str, float]
    histogram: Histogram


@dataclass(frozen=True)
class LabelDistribution:
    """Rows per declared label and their shares of all rows (in declared label order)."""

    counts: dict[str, int]
    shares: dict[str, float]


@dataclass(frozen=True)
class TokenCount:
    """One vocabulary entry and how often it occurs."""

    token: str
    count: int


@dataclass(frozen=True)
class VocabularyStats:
    """Vocabulary statistics.

    Attributes:
        size: Distinct tokens (types).
        tokens: All tokens.
        type_token_ratio: ``size / tokens`` (0 for no tokens).
        mean_words_per_text: Mean whitespace-separated words per text.
        top_tokens: The most frequent tokens, most frequent first (ties in alphabetical order).
    """

    size: int
    tokens: int
    type_token_ratio: float
    mean_words_per_text: float
    top_tokens: list[TokenCount]


@dataclass(frozen=True)
class DataProfile(Record):
    """The profile of a set of labelled texts; written as ``profile.json``."""

    rows: int
    text_length: Distribution
    word_count: Distribution
    labels: LabelDistribution
    vocabulary: VocabularyStats


def _distribution(values: pd.Series) -> Distribution:
    numbers = values.to_numpy(dtype=float)
    if numbers.size == 0:
        return Distribution(0.0, {f"p{q}": 0.0 for q in QUANTILES}, Histogram([0.0, 0.0], [0]))
    quantiles = np.percentile(numbers, QUANTILES)
    counts, edges = np.histogram(numbers, bins=HISTOGRAM_BINS)
    return Distribution(
        mean=round(float(numbers.mean()), 6),
        quantiles={f"p{q}": round(float(v), 6) for q, v in zip(QUANTILES, quantiles, strict=True)},
        histogram=Histogram([round(float(e), 6) for e in edges], [int(c) for c in counts]),
    )


def profile_texts(texts: pd.Series, labels: pd.Series, declared: tuple[str, ...]) -> DataProfile:
    """Profile labelled texts.

    Args:
        texts: The texts (as prepared: clean, no missing values).
        labels: Their labels.
        declared: The declared label set; the label distribution lists every declared label in this
            order, with 0 for labels that do not occur.

    Returns:
        Length, word-count, label and vocabulary statistics.
    """
    s = pd.Series(texts, dtype=object).fillna("").astype(str).reset_index(drop=True)
    words = s.str.split().str.len().fillna(0).astype("int64")
    tokens = s.str.casefold().str.findall(_TOKEN).explode().dropna().value_counts()
    total = int(tokens.sum())
    top = sorted(tokens.items(), key=lambda item: (-item[1], item[0]))[:TOP_TOKENS]
    label_counts = pd.Series(labels, dtype=object).astype(str).value_counts()
    counts = {label: int(label_counts.get(label, 0)) for label in declared}
    rows = len(s)
    return DataProfile(
        rows=rows,
        text_length=_distribution(s.str.len()),
        word_count=_distribution(words),
        labels=LabelDistribution(
            counts=counts,
            shares={label: round(n / rows, 6) if rows else 0.0 for label, n in counts.items()},
        ),
        vocabulary=VocabularyStats(
            size=len(tokens),
            tokens=total,
            type_token_ratio=round(len(tokens) / total, 6) if total else 0.0,
            mean_words_per_text=round(float(words.mean()), 6) if rows else 0.0,
            top_tokens=[TokenCount(str(token), int(count)) for token, count in top],
        ),
    )
