"""Text augmentation: the synonym file format and its errors, seeded copies, synonym replacement, and
copies that repeat an existing text being skipped."""

from __future__ import annotations

import random
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from refinery.config import AugmentConfig
from refinery.data.augment import augment_rows, augment_text, parse_synonyms, read_synonyms
from refinery.errors import DataError

SYNONYMS = """\
# adjectives
good, great , fine
bad,awful   # a comment after a group

Screen, display
"""

ROWS = pd.DataFrame(
    {
        "text": [
            "The screen is good and the battery is bad.",
            "Good sound, bad price, fine delivery.",
            "A great display for the money.",
            "The keyboard feels cheap and the screen flickers.",
        ],
        "label": ["negative", "positive", "positive", "negative"],
    }
)


def write(tmp_path: Path, text: str, name: str = "synonyms.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_parses_groups_case_insensitively_with_comments() -> None:
    synonyms = parse_synonyms(SYNONYMS, "synonyms.txt")
    assert synonyms == {
        "good": ("great", "fine"),
        "great": ("good", "fine"),
        "fine": ("good", "great"),
        "bad": ("awful",),
        "awful": ("bad",),
        "screen": ("display",),
        "display": ("Screen",),
    }


def test_a_word_in_two_groups_gets_both() -> None:
    assert parse_synonyms("fast, quick\nfast, rapid\n", "s.txt")["fast"] == ("quick", "rapid")


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (
            "good, great\n# only one\nlonely\n",
            3,
            r"synonym group 'lonely' needs at least two different words",
        ),
        ("good, Good\n", 1, r"needs at least two different words"),
        ("good,, great\n", 1, r"empty entry in synonym group 'good,, great'"),
        ("\n\ngood, very good\n", 3, r"'very good' is several words"),
    ],
    ids=["one-word", "same-word-twice", "empty-entry", "phrase"],
)
def test_a_malformed_line_is_named_with_file_and_line(
    tmp_path: Path, content: str, line: int, message: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(DataError, match=rf"{path}, line {line}: .*{message}.*data.prepare.augment.synonyms"):
        read_synonyms(str(path))


def test_a_missing_or_undecodable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"synonym file not found: .*nope\.txt \(data.prepare.augment.synonyms\)"
    ):
        read_synonyms(str(tmp_path / "nope.txt"))
    path = tmp_path / "latin1.txt"
    path.write_bytes("good, great\ncaf\xe9, bistro\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{path}, line 2: synonym file is not valid UTF-8"):
        read_synonyms(str(path))


def test_reads_through_fsspec() -> None:
    uri = "memory://refinery-tests/synonyms.txt"
    with fsspec.open(uri, "w", encoding="utf-8") as fh:
        fh.write(SYNONYMS)
    try:
        assert read_synonyms(uri)["bad"] == ("awful",)
    finally:
        fsspec.filesystem("memory").rm("/refinery-tests", recursive=True)


def test_synonym_replacement_keeps_case_and_punctuation() -> None:
    cfg = AugmentConfig(enabled=True, deletion_probability=0, swap_probability=0, synonym_probability=1)
    synonyms = parse_synonyms(SYNONYMS, "s.txt")
    text = augment_text("Good sound, bad price. SCREEN!", cfg, synonyms, random.Random(0))
    first, sound, second, price, third = text.split()
    assert first in {"Great", "Fine"} and (sound, price) == ("sound,", "price.")
    assert second == "awful" and third == "DISPLAY!"


def test_deletion_never_empties_a_text() -> None:
    cfg = AugmentConfig(enabled=True, deletion_probability=0.99, swap_probability=0, synonym_probability=0)
    rng = random.Random(1)
    for _ in range(50):
        out = augment_text("one two three", cfg, {}, rng)
        assert out and set(out.split()) <= {"one", "two", "three"} and len(out.split()) <= 3


def test_copies_are_seeded_and_use_synonyms() -> None:
    cfg = AugmentConfig(enabled=True, copies=3, synonym_probability=0.8)
    synonyms = parse_synonyms(SYNONYMS, "s.txt")
    first = augment_rows(ROWS, cfg, seed=11, synonyms=synonyms)
    second = augment_rows(ROWS, cfg, seed=11, synonyms=synonyms)
    other = augment_rows(ROWS, cfg, seed=12, synonyms=synonyms)

    pd.testing.assert_frame_equal(first.rows, second.rows)
    assert not first.rows["text"].equals(other.rows["text"])
    assert len(first.rows) + first.skipped == 3 * len(ROWS)
    assert first.rows.columns.tolist() == ["text", "label"]
    assert first.rows["text"].str.contains(r"\b(?:great|fine|awful|display|Screen)\b", case=False).any()
    # Each copy keeps the label of the row it came from.
    origin = {t: label for t, label in zip(ROWS["text"], ROWS["label"], strict=True)}
    for text, label in zip(first.rows["text"], first.rows["label"], strict=True):
        assert label in origin.values() and text not in origin
    assert first.rows["text"].is_unique


def test_copies_matching_an_existing_text_are_skipped() -> None:
    # No edit can happen: every copy equals its row, which is an existing text.
    cfg = AugmentConfig(
        enabled=True, copies=2, deletion_probability=0, swap_probability=0, synonym_probability=0
    )
    result = augment_rows(ROWS, cfg, seed=0, existing=ROWS["text"])
    assert result.rows.empty and result.skipped == 8

    # Only synonyms change a text; one copy per row is new, the second repeats the first.
    cfg = AugmentConfig(
        enabled=True, copies=2, deletion_probability=0, swap_probability=0, synonym_probability=1
    )
    synonyms = parse_synonyms("good, great\nscreen, display\n", "s.txt")
    existing = pd.Series(["the DISPLAY is great and the battery is bad"])  # equal once normalised
    result = augment_rows(ROWS, cfg, seed=0, synonyms=synonyms, existing=pd.concat([ROWS["text"], existing]))
    assert result.rows["text"].tolist() == [
        "Great sound, bad price, fine delivery.",
        "A good screen for the money.",
        "The keyboard feels cheap and the display flickers.",
    ]
    assert result.skipped == 5
