"""prepare_data: cleaning, conflicting labels, duplicates, given splits and leakage, a seeded stratified
(and grouped) split, balancing, augmentation, the reference profile, and no half-written output on
failure."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from refinery.config import RunConfig, parse_config, resolve
from refinery.data.prepare import PreparedData, prepare_data
from refinery.data.profile import QUANTILES, TOP_TOKENS, DataProfile
from refinery.data.text import comparison_keys
from refinery.errors import DataError
from refinery.monitoring.descriptors import DESCRIPTOR_COLUMNS

FILES = [
    "prepared.json",
    "profile.json",
    "reference.parquet",
    "test.parquet",
    "train.parquet",
    "validation.parquet",
]
REMOVED = (
    "blank_removed",
    "conflicting_removed",
    "exact_duplicates_removed",
    "normalised_duplicates_removed",
    "leaked_removed",
    "new_base_duplicates_removed",
    "replay_removed",
    "balance_removed",
)


def run_config(tmp_path: Path, frame: pd.DataFrame, seed: int = 7, **data: object) -> RunConfig:
    path = tmp_path / "reviews.csv"
    frame.to_csv(path, index=False)
    tree = {
        "state_dir": str(tmp_path / "state"),
        "data": {
            "uri": str(path),
            "labels": ["negative", "positive"],
            "split": {"validation_fraction": 0.15, "test_fraction": 0.2, "seed": seed},
            **data,
        },
        "model": {"base": str(tmp_path / "model")},
    }
    return resolve(parse_config(tree), tmp_path)


def read_splits(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in ("train", "validation", "test")}


def assert_rows_add_up(result: PreparedData) -> None:
    removed = sum(getattr(result, name) for name in REMOVED)
    added = result.balance_added + result.augmented_added
    assert result.rows_in - removed + added == result.rows_out == sum(result.split_sizes.values())


def reviews(n: int, prefix: str = "review") -> pd.DataFrame:
    """``n`` distinct texts, alternating labels (so any subset of them is easy to stratify)."""
    return pd.DataFrame(
        {
            "text": [f"{prefix} number {i} about the screen" for i in range(n)],
            "label": [("negative", "positive")[i % 2] for i in range(n)],
        }
    )


def test_writes_the_layout_with_a_stratified_split(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    cfg = run_config(tmp_path, demo_df)
    out = tmp_path / "dataset"
    result = prepare_data(cfg, out)
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left"

    splits = read_splits(out)
    assert {k: len(v) for k, v in splits.items()} == result.split_sizes
    assert_rows_add_up(result)
    n = result.rows_out
    assert result.split_sizes["test"] == pytest.approx(0.2 * n, abs=1)
    assert result.split_sizes["validation"] == pytest.approx(0.15 * n, abs=2)
    overall = (demo_df.drop_duplicates("text")["label"] == "positive").mean()
    for name, part in splits.items():
        assert part.columns.tolist() == ["text", "label"]
        assert set(part["label"]) == {"negative", "positive"}
        assert (part["label"] == "positive").mean() == pytest.approx(overall, abs=0.03), name
    keys = [set(comparison_keys(part["text"])) for part in splits.values()]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2]), "a text in two splits"

    reference = pd.read_parquet(out / "reference.parquet")
    assert reference.columns.tolist() == [*DESCRIPTOR_COLUMNS, "label"]
    assert len(reference) == len(splits["train"])
    assert reference["label"].tolist() == splits["train"]["label"].tolist()

    sha = hashlib.sha256((tmp_path / "reviews.csv").read_bytes()).hexdigest()
    assert result.data_sha256 == sha
    assert result.source_sha256 == {"train": sha} and result.source_uris == {"train": cfg.data.uri}
    assert result.class_weights is None
    assert PreparedData.read(out) == result
    written = json.loads((out / "prepared.json").read_text())
    assert written["split_label_counts"]["test"] == result.split_label_counts["test"]
    assert written["class_weights"] is None
    assert written["paths"]["profile"] == str(out / "profile.json")


def test_deterministic_for_a_seed(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    first = read_splits_after(tmp_path / "a", demo_df, seed=3)
    second = read_splits_after(tmp_path / "b", demo_df, seed=3)
    other = read_splits_after(tmp_path / "c", demo_df, seed=4)
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name])
    assert not first["test"]["text"].equals(other["test"]["text"])


def read_splits_after(
    folder: Path, frame: pd.DataFrame, seed: int, **data: object
) -> dict[str, pd.DataFrame]:
    folder.mkdir()
    prepare_data(run_config(folder, frame, seed=seed, **data), folder / "dataset")
    return read_splits(folder / "dataset")


def test_cleans_texts_and_counts_blank_exact_and_normalised_duplicates(
    tmp_path: Path, demo_df: pd.DataFrame
) -> None:
    base = demo_df.head(200).rename(columns={"text": "review", "label": "sentiment"})
    extra = pd.DataFrame(
        {
            "review": [
                "Cafe\u0301  was great",  # changed by cleaning
                "Café was great",  # an exact duplicate of the clean text above
                "  Café was great\n",  # changed, and an exact duplicate
                "CAFÉ was great!!",  # a normalised duplicate
                "Cafe was great",  # a normalised duplicate (accent dropped)
                "   ",  # blank
                None,  # blank
            ],
            "sentiment": ["positive"] * 5 + ["negative", "positive"],
        }
    )
    frame = pd.concat([base, extra], ignore_index=True)
    cfg = run_config(tmp_path, frame, text_column="review", label_column="sentiment")
    result = prepare_data(cfg, tmp_path / "dataset", frame=frame)

    assert result.rows_in == 207
    assert result.blank_removed == 2
    assert result.texts_changed == 2
    assert result.exact_duplicates_removed == 2
    assert result.normalised_duplicates_removed == 2
    assert result.conflicting_texts == result.conflicting_removed == 0
    assert_rows_add_up(result)
    everything = pd.concat(read_splits(tmp_path / "dataset").values())
    cafe = everything[comparison_keys(everything["text"]) == "cafe was great"]
    assert cafe["text"].tolist() == ["Café was great"], "the first occurrence, cleaned"
    assert everything["text"].str.contains(r"\s\s|^\s|\s$").sum() == 0
    metrics = result.metrics()
    assert metrics["texts_changed"] == 2.0 and metrics["normalised_duplicates_removed"] == 2.0
    assert all(isinstance(v, float) for v in metrics.values())


CONFLICTS = pd.DataFrame(
    {
        "text": [
            "Works as described.",  # 2 x positive, 1 x negative: majority positive
            "works as described",
            "Works as described!",
            "Mixed feelings.",  # 1 x positive, 1 x negative: a tie
            "mixed feelings",
        ],
        "label": ["positive", "positive", "negative", "positive", "negative"],
    }
)


@pytest.mark.parametrize(
    ("policy", "removed", "kept"),
    [("drop", 5, None), ("majority", 3, "positive")],
)
def test_conflicting_labels_policy(tmp_path: Path, policy: str, removed: int, kept: str | None) -> None:
    frame = pd.concat([reviews(60), CONFLICTS], ignore_index=True)
    cfg = run_config(tmp_path, frame, prepare={"conflicting_labels": policy})
    result = prepare_data(cfg, tmp_path / "dataset")

    assert result.conflicting_texts == 2
    assert result.conflicting_removed == removed
    everything = pd.concat(read_splits(tmp_path / "dataset").values())
    keys = comparison_keys(everything["text"])
    assert not (keys == "mixed feelings").any(), "a tie is dropped under either policy"
    described = everything[keys == "works as described"]
    if kept is None:
        assert described.empty
    else:
        # The majority's rows are kept, and then deduplicated to the first of them.
        assert described[["text", "label"]].values.tolist() == [["Works as described.", kept]]
        assert result.normalised_duplicates_removed == 1
    assert_rows_add_up(result)


def test_a_given_test_file_is_the_test_split_and_its_leaked_rows_are_removed(
    tmp_path: Path,
) -> None:
    train = reviews(100)
    held_out = pd.concat(
        [
            reviews(30, prefix="held-out"),
            # Already in the training file (once exactly, once normalised): leakage.
            pd.DataFrame(
                {
                    "text": ["review number 3 about the screen", "REVIEW number 4, about the screen!"],
                    "label": ["positive", "negative"],
                }
            ),
            # A duplicate within the given file.
            pd.DataFrame({"text": ["held-out number 0 about the screen"], "label": ["negative"]}),
        ],
        ignore_index=True,
    )
    test_path = tmp_path / "held-out.jsonl"
    held_out.to_json(test_path, orient="records", lines=True)
    cfg = run_config(tmp_path, train, test_uri=str(test_path))
    result = prepare_data(cfg, tmp_path / "dataset")

    splits = read_splits(tmp_path / "dataset")
    assert sorted(splits["test"]["text"]) == sorted(reviews(30, prefix="held-out")["text"])
    assert result.leaked_removed == 2
    assert result.exact_duplicates_removed == 1
    # The validation split is split off the training file: validation_fraction of its rows.
    assert result.split_sizes == {"train": 85, "validation": 15, "test": 30}
    assert set(splits["train"]["text"]) | set(splits["validation"]["text"]) == set(train["text"])
    assert result.source_uris == {"train": cfg.data.uri, "test": str(test_path)}
    assert result.source_sha256["test"] == hashlib.sha256(test_path.read_bytes()).hexdigest()
    assert result.data_sha256 == hashlib.sha256((tmp_path / "reviews.csv").read_bytes()).hexdigest()
    assert result.source_rows == {"train": 100, "test": 33}
    assert result.metrics()["leaked_removed"] == 2.0
    assert_rows_add_up(result)


def test_given_validation_and_test_files_leave_the_training_file_whole(tmp_path: Path) -> None:
    validation, test = reviews(20, prefix="validation"), reviews(20, prefix="test")
    # The same text in the validation and in the test file: the later split (test) loses it.
    test.loc[0, "text"] = validation.loc[5, "text"]
    validation.to_csv(tmp_path / "validation.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    cfg = run_config(
        tmp_path,
        reviews(50),
        validation_uri=str(tmp_path / "validation.csv"),
        test_uri=str(tmp_path / "test.csv"),
        group_column="author",  # unused: nothing is split off the training file
    )
    result = prepare_data(cfg, tmp_path / "dataset")

    assert result.split_sizes == {"train": 50, "validation": 20, "test": 19}
    assert result.leaked_removed == 1
    splits = read_splits(tmp_path / "dataset")
    assert splits["validation"]["text"].tolist() == validation["text"].tolist()
    assert validation.loc[5, "text"] not in set(splits["test"]["text"])


def grouped(n_groups: int, per_group: int) -> pd.DataFrame:
    """Reviews by ``n_groups`` authors, each writing ``per_group`` reviews of one sentiment."""
    rows = [
        {
            "text": f"author {g} writes review {i} of the camera",
            "label": ("negative", "positive")[g % 2],
            "author": f"a{g}",
        }
        for g in range(n_groups)
        for i in range(per_group)
    ]
    return pd.DataFrame(rows)


def test_rows_of_one_group_never_straddle_splits(tmp_path: Path) -> None:
    frame = grouped(40, 5)
    result = prepare_data(run_config(tmp_path, frame, group_column="author"), tmp_path / "dataset")

    author = dict(zip(frame["text"], frame["author"], strict=True))
    groups = {
        name: {author[t] for t in part["text"]} for name, part in read_splits(tmp_path / "dataset").items()
    }
    assert not (groups["train"] & groups["validation"] or groups["train"] & groups["test"])
    assert not groups["validation"] & groups["test"]
    assert sum(len(g) for g in groups.values()) == 40
    # Whole groups of 5 rows: round(1 / 0.2) = 5 folds of 40 groups for test, then round(0.8 / 0.15) = 5
    # folds of the 32 groups left for validation (6 or 7 groups): the fractions are approximated.
    assert result.split_sizes["test"] == 40
    assert result.split_sizes["validation"] in (30, 35)
    for name, counts in result.split_label_counts.items():
        assert counts["negative"] > 0 and counts["positive"] > 0, name
    assert_rows_add_up(result)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (grouped(40, 2).drop(columns="author"), r"column 'author' \(data.group_column\) is missing"),
        (
            grouped(40, 2).assign(author=lambda f: f["author"].where(f.index % 7 != 0)),
            r"12 row\(s\) have no value in group column 'author' \(data.group_column\)",
        ),
        (
            grouped(3, 10),
            r"cannot split 30 rows \(per label: .*, 3 groups in 'author' \(data.group_column\)\) .*"
            r"data.split.test_fraction=0.2",
        ),
    ],
    ids=["missing-column", "missing-groups", "too-few-groups"],
)
def test_group_column_problems_are_named(tmp_path: Path, frame: pd.DataFrame, message: str) -> None:
    out = tmp_path / "dataset"
    with pytest.raises(DataError, match=message):
        prepare_data(run_config(tmp_path, frame, group_column="author"), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv"]


def imbalanced() -> pd.DataFrame:
    """300 negative and 100 positive reviews."""
    frame = reviews(400)
    frame["label"] = ["positive" if i % 4 == 0 else "negative" for i in range(400)]
    return frame


def test_class_weights_are_recorded_for_the_loss(tmp_path: Path) -> None:
    result = prepare_data(
        run_config(tmp_path, imbalanced(), prepare={"balance": "class_weights"}), tmp_path / "d"
    )
    counts = result.split_label_counts["train"]
    n = result.split_sizes["train"]
    assert counts == {"negative": 195, "positive": 65}
    assert result.class_weights == {
        "negative": pytest.approx(n / (2 * 195), abs=1e-6),
        "positive": pytest.approx(n / (2 * 65), abs=1e-6),
    }
    assert json.loads((tmp_path / "d" / "prepared.json").read_text())["class_weights"] == result.class_weights
    assert result.metrics()["class_weight_positive"] == pytest.approx(2.0)
    assert result.balance_added == result.balance_removed == 0


def test_oversampling_equalises_the_training_classes(tmp_path: Path) -> None:
    result = prepare_data(
        run_config(tmp_path, imbalanced(), prepare={"balance": "oversample"}), tmp_path / "d"
    )
    splits = read_splits(tmp_path / "d")
    train = splits["train"]
    assert result.split_label_counts["train"] == {"negative": 195, "positive": 195}
    assert result.balance_added == 130
    # Every positive row is repeated exactly three times (65 rows up to 195).
    assert set(train.loc[train["label"] == "positive", "text"].value_counts()) == {3}
    assert train.loc[train["label"] == "negative", "text"].is_unique
    # Validation and test keep the natural class mix; the reference describes the data before resampling.
    assert result.split_label_counts["test"] == {"negative": 60, "positive": 20}
    assert len(pd.read_parquet(tmp_path / "d" / "reference.parquet")) == 260
    assert DataProfile.from_dict(json.loads((tmp_path / "d" / "profile.json").read_text())).labels.counts == {
        "negative": 195,
        "positive": 65,
    }
    assert_rows_add_up(result)


def test_undersampling_keeps_the_smallest_class_size(tmp_path: Path) -> None:
    cfg = run_config(tmp_path, imbalanced(), prepare={"balance": "undersample"})
    result = prepare_data(cfg, tmp_path / "d")
    train = read_splits(tmp_path / "d")["train"]
    assert result.split_label_counts["train"] == {"negative": 65, "positive": 65}
    assert result.balance_removed == 130
    assert train["text"].is_unique
    assert_rows_add_up(result)
    again = tmp_path / "again"
    again.mkdir()
    prepare_data(run_config(again, imbalanced(), prepare={"balance": "undersample"}), again / "d")
    pd.testing.assert_frame_equal(train, read_splits(again / "d")["train"])


def test_balancing_a_class_absent_from_training_is_refused(tmp_path: Path) -> None:
    validation, test = reviews(20, prefix="validation"), reviews(20, prefix="test")
    validation.to_csv(tmp_path / "validation.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    cfg = run_config(
        tmp_path,
        reviews(40).assign(label="negative"),
        validation_uri=str(tmp_path / "validation.csv"),
        test_uri=str(tmp_path / "test.csv"),
        prepare={"balance": "oversample"},
    )
    with pytest.raises(
        DataError, match=r"data.prepare.balance=oversample: .* no rows of label\(s\) \['positive'\]"
    ):
        prepare_data(cfg, tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()


def test_augmentation_adds_seeded_copies_to_training_only(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    synonyms = tmp_path / "synonyms.txt"
    synonyms.write_text("# product words\nscreen, display\nbattery, cell\ngreat, excellent, superb\n")
    augment = {"enabled": True, "copies": 2, "synonyms": str(synonyms), "synonym_probability": 0.5}
    frame = demo_df.head(200)
    first = read_splits_after(tmp_path / "a", frame, seed=5, prepare={"augment": augment})
    second = read_splits_after(tmp_path / "b", frame, seed=5, prepare={"augment": augment})
    plain = read_splits_after(tmp_path / "c", frame, seed=5)
    result = PreparedData.read(tmp_path / "a" / "dataset")

    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name])
    pd.testing.assert_frame_equal(first["test"], plain["test"])
    pd.testing.assert_frame_equal(first["validation"], plain["validation"])
    n = len(plain["train"])
    assert result.augmented_added + result.augmented_skipped == 2 * n
    assert result.augmented_added > n
    train = first["train"]
    pd.testing.assert_frame_equal(train.head(n), plain["train"])
    added = train.iloc[n:]
    assert len(added) == result.augmented_added
    assert added["text"].str.contains(r"\b(?:display|cell|excellent|superb)\b", case=False).any()
    # No copy repeats a text of any split, nor another copy.
    keys = comparison_keys(pd.concat([train["text"], first["validation"]["text"], first["test"]["text"]]))
    assert keys.is_unique
    assert_rows_add_up(result)


def test_profile_describes_the_training_split(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    result = prepare_data(run_config(tmp_path, demo_df), tmp_path / "dataset")
    raw = json.loads((tmp_path / "dataset" / "profile.json").read_text())
    assert set(raw) == {"rows", "text_length", "word_count", "labels", "vocabulary"}
    profile = DataProfile.from_dict(raw)
    train = read_splits(tmp_path / "dataset")["train"]
    lengths, words = train["text"].str.len(), train["text"].str.split().str.len()

    assert profile.rows == len(train) == result.split_sizes["train"]
    for dist, values in ((profile.text_length, lengths), (profile.word_count, words)):
        assert list(dist.quantiles) == [f"p{q}" for q in QUANTILES]
        assert dist.quantiles["p0"] == values.min() and dist.quantiles["p100"] == values.max()
        assert dist.quantiles["p50"] == pytest.approx(values.median())
        assert dist.mean == pytest.approx(values.mean(), abs=1e-5)
        assert sum(dist.histogram.counts) == len(train)
        assert len(dist.histogram.edges) == len(dist.histogram.counts) + 1
    assert profile.labels.counts == result.split_label_counts["train"]
    assert sum(profile.labels.shares.values()) == pytest.approx(1.0)
    vocab = profile.vocabulary
    tokens = train["text"].str.casefold().str.findall(r"[^\W_]+(?:'[^\W_]+)*").explode().value_counts()
    assert vocab.size == len(tokens) and vocab.tokens == tokens.sum()
    assert vocab.type_token_ratio == pytest.approx(vocab.size / vocab.tokens, abs=1e-6)
    assert vocab.mean_words_per_text == pytest.approx(words.mean(), abs=1e-5)
    assert len(vocab.top_tokens) == TOP_TOKENS
    assert vocab.top_tokens[0].token == "the" and vocab.top_tokens[0].count == tokens["the"]
    assert [t.count for t in vocab.top_tokens] == sorted((t.count for t in vocab.top_tokens), reverse=True)


def test_replaces_an_existing_dataset(tmp_path: Path, demo_df: pd.DataFrame) -> None:
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "train.parquet").write_bytes(b"stale")
    result = prepare_data(run_config(tmp_path, demo_df), out)
    assert len(pd.read_parquet(out / "train.parquet")) == result.split_sizes["train"]
    assert sorted(p.name for p in out.iterdir()) == FILES


@pytest.mark.parametrize(
    ("frame", "data", "message"),
    [
        (
            pd.DataFrame({"text": ["a", "b"], "label": ["negative", "neutral"]}),
            {},
            r"undeclared label\(s\) \['neutral'\]",
        ),
        (
            pd.DataFrame({"body": ["a"], "label": ["negative"]}),
            {},
            r"column 'text' \(data.text_column\) is missing",
        ),
        (
            pd.DataFrame({"text": [f"t{i}" for i in range(6)], "label": ["negative"] * 5 + ["positive"]}),
            {},
            r"cannot split 6 rows",
        ),
        (pd.DataFrame({"text": [" ", ""], "label": ["negative", "positive"]}), {}, "no rows left"),
        (
            reviews(60),
            {"test_uri": "no-such-test.csv"},
            r"data file not found: .*no-such-test\.csv",
        ),
        (
            reviews(60),
            {"prepare": {"augment": {"enabled": True, "synonyms": "no-such-synonyms.txt"}}},
            r"synonym file not found: .*no-such-synonyms\.txt \(data.prepare.augment.synonyms\)",
        ),
    ],
    ids=[
        "unknown-label",
        "missing-column",
        "too-few-to-split",
        "all-blank",
        "missing-test-file",
        "missing-synonyms",
    ],
)
def test_bad_input_writes_nothing(
    tmp_path: Path, frame: pd.DataFrame, data: dict[str, object], message: str
) -> None:
    out = tmp_path / "dataset"
    with pytest.raises(DataError, match=message):
        prepare_data(run_config(tmp_path, frame, **data), out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv"]


def test_a_test_file_made_only_of_leaked_rows_is_refused(tmp_path: Path) -> None:
    train = reviews(60)
    train.head(10).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DataError, match=r"test\.csv: the test split is empty after removing 10 row\(s\)"):
        prepare_data(run_config(tmp_path, train, test_uri=str(tmp_path / "test.csv")), tmp_path / "dataset")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv", "test.csv"]


def test_a_failure_while_writing_leaves_nothing(
    tmp_path: Path, demo_df: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: PreparedData, path: Path) -> Path:
        raise OSError("disk full")

    # Stands in for a full disk: the only way to make the last write fail here.
    monkeypatch.setattr(PreparedData, "write_json", broken)
    with pytest.raises(OSError, match="disk full"):
        prepare_data(run_config(tmp_path, demo_df), tmp_path / "dataset")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv"]


def test_slice_columns_stay_in_the_held_out_splits(tmp_path: Path) -> None:
    frame = reviews(200).assign(category=[("phones", "laptops", None, 3)[i % 4] for i in range(200)])
    out = tmp_path / "dataset"
    prepare_data(run_config(tmp_path, frame, slice_columns=["category"]), out)
    splits = read_splits(out)
    assert list(splits["train"].columns) == ["text", "label"]
    for name in ("validation", "test"):
        part = splits[name]
        assert list(part.columns) == ["text", "label", "category"]
        assert set(part["category"]) == {"phones", "laptops", "(missing)", "3"}
        # Each row keeps its own value: the text's number says which one it was given.
        number = part["text"].str.extract(r"number (\d+) ")[0].astype(int)
        expected = number.map(lambda i: ("phones", "laptops", "(missing)", "3")[i % 4])
        assert (part["category"] == expected).all()


def test_a_missing_slice_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"column 'category' \(data.slice_columns\) is missing"):
        prepare_data(run_config(tmp_path, reviews(60), slice_columns=["category"]), tmp_path / "dataset")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv"]
