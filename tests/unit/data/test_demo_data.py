"""The demo data generator: deterministic, roughly balanced, noisy on purpose, and a clearly drifted variant."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from refinery.config import DataConfig
from refinery.data import demo
from refinery.data.demo import generate_reviews, write_demo_data
from refinery.data.load import read_table


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    return generate_reviews(2000, seed=13)


@pytest.fixture(scope="module")
def drifted() -> pd.DataFrame:
    return generate_reviews(1000, seed=14, drifted=True)


def words(texts: pd.Series) -> pd.Series:
    return texts.str.split().str.len()


def test_deterministic_for_a_seed(demo_df: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(generate_reviews(600, seed=0), demo_df)
    assert not generate_reviews(50, seed=1)["text"].equals(demo_df["text"].head(50))
    assert generate_reviews(0, seed=0).columns.tolist() == ["text", "label"]


def test_shape_labels_and_balance(reviews: pd.DataFrame) -> None:
    assert reviews.columns.tolist() == ["text", "label"] and len(reviews) == 2000
    assert set(reviews["label"]) == {"negative", "positive"}
    assert 0.50 <= (reviews["label"] == "positive").mean() <= 0.60
    assert reviews["text"].str.strip().ne("").all()
    assert reviews["text"].duplicated().mean() < 0.01


def test_language_has_negation_mixed_opinions_and_variety(reviews: pd.DataFrame) -> None:
    text = reviews["text"].str.lower()
    assert text.str.contains(r"\bnever\b|n't\b|\bnot\b").mean() > 0.2
    for label in ("negative", "positive"):
        mixed = text[reviews["label"] == label].str.contains(r"\bbut\b|\balthough\b|\bhowever\b|\beven if\b")
        assert mixed.mean() > 0.2, label
    for aspect in ("battery", "screen", "delivery", "price", "support", "build", "sound"):
        assert text.str.contains(aspect).sum() > 20, aspect
    assert reviews["text"].nunique() > 0.99 * len(reviews)


def test_label_noise_is_a_few_percent(monkeypatch: pytest.MonkeyPatch, reviews: pd.DataFrame) -> None:
    monkeypatch.setattr(demo, "LABEL_NOISE", 0.0)
    clean = generate_reviews(2000, seed=13)
    assert clean["text"].equals(reviews["text"])  # noise draws do not shift the text stream
    flipped = (clean["label"] != reviews["label"]).mean()
    assert 0.025 <= flipped <= 0.055


def test_typos_touch_a_few_percent_of_words(monkeypatch: pytest.MonkeyPatch, reviews: pd.DataFrame) -> None:
    def vocabulary(frame: pd.DataFrame) -> list[str]:
        return re.findall(r"[a-z']+", " ".join(frame["text"]).lower())

    monkeypatch.setattr(demo, "TYPO_RATE", 0.0)
    known = set(vocabulary(generate_reviews(6000, seed=99)))
    tokens = vocabulary(reviews)
    unknown = sum(t not in known for t in tokens) / len(tokens)
    assert 0.01 <= unknown <= 0.06


def test_drifted_is_another_domain_longer_and_about_half_positive(
    reviews: pd.DataFrame, drifted: pd.DataFrame
) -> None:
    ratio = words(drifted["text"]).mean() / words(reviews["text"]).mean()
    assert 2.0 <= ratio <= 3.2
    assert 0.44 <= (drifted["label"] == "positive").mean() <= 0.56
    hotel = drifted["text"].str.contains(
        r"\b(?:stay|stayed|nights?|room|hotel|guesthouse|resort|inn|breakfast|staff)\b", case=False
    )
    assert hotel.mean() > 0.9
    assert reviews["text"].str.contains(r"\b(?:hotel|breakfast)\b", case=False).mean() < 0.01


def test_learnable_but_not_trivial(reviews: pd.DataFrame) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    train, test = reviews.iloc[:1500], reviews.iloc[1500:]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(C=10, max_iter=2000).fit(
        vectorizer.fit_transform(train["text"]), train["label"]
    )
    f1 = f1_score(test["label"], model.predict(vectorizer.transform(test["text"])), average="macro")
    # A bag of words learns most of it; negation, mixed opinions and label noise keep it well short of 1.
    assert 0.75 <= f1 <= 0.95


def test_write_demo_data(tmp_path: Path) -> None:
    result = write_demo_data(tmp_path / "demo", n=200, seed=5)
    assert (result.reviews_rows, result.drifted_rows) == (200, 100)
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [
        "drifted.csv",
        "reviews.csv",
        "traffic.csv",
    ]
    frame = read_table(DataConfig(uri=str(result.reviews_path), labels=("negative", "positive")))
    pd.testing.assert_frame_equal(frame, generate_reviews(200, seed=5))
    drifted = read_table(DataConfig(uri=str(result.drifted_path), labels=("negative", "positive")))
    pd.testing.assert_frame_equal(drifted, generate_reviews(100, seed=6, drifted=True))
    assert sum(result.label_counts["reviews"].values()) == 200
    assert result.to_dict()["reviews_path"] == str(result.reviews_path)
    # The traffic after the release: unseen reviews, three products to two hotels.
    traffic = read_table(DataConfig(uri=str(result.traffic_path), labels=("negative", "positive")))
    assert result.traffic_rows == len(traffic) == 40
    hotel_words = traffic["text"].str.contains("hotel|room|stay|staff|breakfast", case=False)
    assert 10 <= int(hotel_words.sum()) <= 24
    assert not set(traffic["text"]) & set(frame["text"])
