"""The shared text rules: what counts as the same text, damaged text, and text made of letters."""

from __future__ import annotations

import pandas as pd

from refinery.data import text


def test_clean_texts_normalises_unicode_and_whitespace_only() -> None:
    raw = pd.Series(["Cafe\u0301  ok ", "a\tb\n\nc", "zero\u200bwidth", None, 42, "Same Case!"])
    assert text.clean_texts(raw).tolist() == ["Café ok", "a b c", "zerowidth", "", "42", "Same Case!"]


def test_comparison_keys_ignore_case_accents_punctuation_and_spacing() -> None:
    keys = text.comparison_keys(pd.Series(["Great  movie!!", "great movie", "GRÉAT, movie.", "great movies"]))
    assert keys.tolist() == ["great movie", "great movie", "great movie", "great movies"]


def test_first_occurrence_points_at_the_earlier_row() -> None:
    hashes = text.key_hashes(pd.Series(["a", "b", "a", "c", "b", "a"]))
    assert text.first_occurrence(hashes).tolist() == [pd.NA, pd.NA, 0, pd.NA, 1, 0]


def test_damaged_characters_count_replacement_and_control_characters() -> None:
    raw = pd.Series(["fine text\twith tab\nand newline", "bro\ufffdken", "nul\x00 and bell\x07", "c1\x85"])
    assert text.damaged_characters(raw).tolist() == [0, 1, 2, 1]


def test_alphabetic_share_counts_letters_among_visible_characters() -> None:
    raw = pd.Series(["abcd", "ab 12", "1234 5678", "héllo wörld", "", "日本語です"])
    assert text.alphabetic_share(raw).round(3).tolist() == [1.0, 0.5, 0.0, 1.0, 1.0, 1.0]
