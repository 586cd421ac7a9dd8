"""text_descriptors: exact values on small texts, and safe handling of empty and missing texts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from refinery.monitoring.descriptors import DESCRIPTOR_COLUMNS, text_descriptors


def test_known_values() -> None:
    frame = text_descriptors(["Hello World!", "Is it 42?  Yes"])
    assert list(frame.columns) == list(DESCRIPTOR_COLUMNS)
    first = frame.iloc[0]
    assert first["text_length"] == 12
    assert first["word_count"] == 2
    assert first["mean_word_length"] == pytest.approx(11 / 2)
    assert first["non_alpha_share"] == pytest.approx(1 / 12)
    assert first["uppercase_share"] == pytest.approx(2 / 10)
    assert first["digit_share"] == 0
    assert (first["exclamation_count"], first["question_count"]) == (1, 0)
    second = frame.iloc[1]
    assert second["word_count"] == 4
    assert second["digit_share"] == pytest.approx(2 / 14)
    assert second["non_alpha_share"] == pytest.approx(3 / 14)  # "4", "2", "?"
    assert second["question_count"] == 1


def test_unicode_letters_count_as_letters() -> None:
    row = text_descriptors(["Café ÉTÉ"]).iloc[0]
    assert row["non_alpha_share"] == 0
    assert row["uppercase_share"] == pytest.approx(4 / 7)


def test_empty_missing_and_no_texts() -> None:
    frame = text_descriptors(["", None, "   "])  # type: ignore[list-item]
    assert len(frame) == 3
    assert not frame.isna().any().any()
    assert (frame.drop(columns="text_length").to_numpy() == 0).all()
    assert frame["text_length"].tolist() == [0, 0, 3]
    empty = text_descriptors([])
    assert list(empty.columns) == list(DESCRIPTOR_COLUMNS) and len(empty) == 0


def test_dtypes_and_index_follow_the_input() -> None:
    texts = pd.Series(["a b", "c"], index=[10, 20])
    frame = text_descriptors(texts)
    assert frame.index.tolist() == [0, 1]
    counts = ["text_length", "word_count", "exclamation_count", "question_count"]
    assert all(frame[c].dtype == np.int64 for c in counts)
    assert all(frame[c].dtype == np.float64 for c in DESCRIPTOR_COLUMNS if c not in counts)
