"""Simple text augmentation of a small training split: random word deletion, random swap and synonym
replacement from a user-supplied synonym file.

Each training row gets ``copies`` new texts; every copy draws its edits from one seeded random
generator, so the same rows, configuration and seed give the same copies. A copy whose normalised form
(:func:`~refinery.data.text.comparison_keys`) matches a text already in the prepared data (any split)
or an earlier copy is skipped: augmentation never adds a duplicate, nor a text of the validation or test
split to the training split.

The synonym file (``data.prepare.augment.synonyms``, read through fsspec like the data) holds one group
of interchangeable words per line, comma-separated; ``#`` starts a comment, blank lines are ignored::

    # adjectives
    good, great, fine
    bad, poor, awful

Words are matched case-insensitively, with punctuation around a word kept (``"Good,"`` can become
``"Great,"``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from refinery.config import AugmentConfig
from refinery.data.text import clean_texts, comparison_keys, key_hashes
from refinery.errors import DataError

SYNONYMS_KEY = "data.prepare.augment.synonyms"
# A word's leading and trailing punctuation, kept when the word is replaced.
_AFFIXES = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)

Synonyms = dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Augmented:
    """New training rows and what was left out.

    Attributes:
        rows: The added rows (columns ``text`` and ``label``), in the order of the rows they came from.
        skipped: Copies left out because they matched an existing text or an earlier copy.
    """

    rows: pd.DataFrame
    skipped: int


def parse_synonyms(text: str, source: str) -> Synonyms:
    """Parse synonym groups (the file format in the module docstring).

    Args:
        text: The file's content.
        source: The file's name, for messages.

    Returns:
        For each case-folded word, the other words of its group(s), in file order.

    Raises:
        DataError: A line holds a group of fewer than two distinct words, an empty entry or an entry of
            several words; the message names the file and line.
    """
    groups: dict[str, dict[str, None]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = clean_texts(pd.Series(line.split(","), dtype=object)).tolist()
        where = f"{source}, line {number}"
        if any(not w for w in words):
            raise DataError(f"{where}: empty entry in synonym group {line!r} ({SYNONYMS_KEY})")
        several = [w for w in words if " " in w]
        if several:
            raise DataError(
                f"{where}: {several[0]!r} is several words; a synonym group lists single words, "
                f"comma-separated ({SYNONYMS_KEY})"
            )
        distinct = list(dict.fromkeys(words, None))
        if len({w.casefold() for w in distinct}) < 2:
            raise DataError(
                f"{where}: synonym group {line!r} needs at least two different words, comma-separated "
                f"({SYNONYMS_KEY})"
            )
        for word in distinct:
            others = groups.setdefault(word.casefold(), {})
            others.update((w, None) for w in distinct if w.casefold() != word.casefold())
    return {word: tuple(others) for word, others in groups.items()}


def read_synonyms(uri: str) -> Synonyms:
    """Read and parse a synonym file (local path or fsspec URI, UTF-8).

    Raises:
        DataError: The file is missing or unreadable, not UTF-8, or malformed (see :func:`parse_synonyms`).
    """
    import fsspec

    try:
        with fsspec.open(uri, "rb", compression="infer") as fh:
            raw: bytes = fh.read()
    except FileNotFoundError:
        raise DataError(f"synonym file not found: {uri} ({SYNONYMS_KEY})") from None
    except IsADirectoryError:
        raise DataError(f"synonym file is a directory: {uri} ({SYNONYMS_KEY})") from None
    except Exception as exc:
        raise DataError(
            f"cannot read synonym file {uri} ({SYNONYMS_KEY}): {type(exc).__name__}: {exc}"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{uri}, line {line}: synonym file is not valid UTF-8 ({exc.reason})") from None
    return parse_synonyms(text.removeprefix("\ufeff"), uri)


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def augment_text(text: str, cfg: AugmentConfig, synonyms: Synonyms, rng: random.Random) -> str:
    """One augmented copy of a text: synonym replacement, then random swaps, then random deletion.

    Args:
        text: A clean text (words separated by single spaces).
        cfg: The probabilities of each edit.
        synonyms: Word -> interchangeable words (:func:`parse_synonyms`).
        rng: The random generator (its state advances).

    Returns:
        The edited text; at least one word always survives deletion.
    """
    words = text.split()
    if not words:
        return text
    if synonyms and cfg.synonym_probability > 0:
        for i, word in enumerate(words):
            match = _AFFIXES.match(word)
            assert match is not None  # the pattern matches every string
            lead, core, trail = match.groups()
            choices = synonyms.get(core.casefold())
            if choices and rng.random() < cfg.synonym_probability:
                words[i] = f"{lead}{_match_case(rng.choice(choices), core)}{trail}"
    if len(words) > 1 and cfg.swap_probability > 0:
        for i in range(len(words)):
            if rng.random() < cfg.swap_probability:
                j = rng.randrange(len(words) - 1)
                j += j >= i  # any position but i
                words[i], words[j] = words[j], words[i]
    if cfg.deletion_probability > 0:
        kept = [w for w in words if rng.random() >= cfg.deletion_probability]
        words = kept or [rng.choice(words)]
    return " ".join(words)


def augment_rows(
    rows: pd.DataFrame,
    cfg: AugmentConfig,
    seed: int,
    *,
    synonyms: Synonyms | None = None,
    existing: Iterable[str] = (),
) -> Augmented:
    """Augmented copies of labelled rows.

    Args:
        rows: Columns ``text`` (clean texts) and ``label``.
        cfg: ``copies`` per row and the probabilities of each edit.
        seed: Seed of the random generator.
        synonyms: Synonym groups (:func:`read_synonyms`); without them no word is replaced.
        existing: Texts already in the data; a copy matching one of them (or an earlier copy) once
            normalised is skipped.

    Returns:
        The new rows (``text``, ``label``) and the number of copies skipped.
    """
    rng = random.Random(seed)
    synonyms = synonyms or {}
    texts: list[str] = []
    labels: list[str] = []
    for text, label in zip(rows["text"].tolist(), rows["label"].tolist(), strict=True):
        for _ in range(cfg.copies):
            texts.append(augment_text(str(text), cfg, synonyms, rng))
            labels.append(label)
    candidates = pd.DataFrame({"text": clean_texts(pd.Series(texts, dtype=object)), "label": labels})
    hashes = key_hashes(comparison_keys(candidates["text"], clean=True))
    known = key_hashes(comparison_keys(pd.Series(list(existing), dtype=object)))
    keep = ~hashes.isin(set(known.tolist())) & ~hashes.duplicated(keep="first") & (candidates["text"] != "")
    added = candidates[keep.to_numpy()].reset_index(drop=True)
    return Augmented(rows=added, skipped=len(candidates) - len(added))
