"""refinery.evaluation.slices: text-length buckets and per-slice scores against scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest

from refinery.errors import DataError
from refinery.evaluation import slices
from refinery.evaluation.metrics import SliceScore


def _predictions(rng: np.random.Generator, true: np.ndarray, accuracy: float, k: int) -> np.ndarray:
    """Predictions right on a random ``accuracy`` share of rows, a random wrong class elsewhere."""
    pred = true.copy()
    wrong = rng.random(true.shape[0]) >= accuracy
    pred[wrong] = (true[wrong] + rng.integers(1, k, size=int(wrong.sum()))) % k
    return pred


# ---------------------------------------------------------------------------------------------- slices


def test_length_bucket_default_edges() -> None:
    texts = ["", "x" * 50, "x" * 51, "x" * 200, "x" * 201, "é" * 60]

    assert slices.length_bucket(texts) == [
        "<=50 chars",
        "<=50 chars",
        "51-200 chars",
        "51-200 chars",
        ">200 chars",
        "51-200 chars",  # characters, not bytes
    ]
    assert slices.length_bucket_names() == ("<=50 chars", "51-200 chars", ">200 chars")
    assert slices.length_bucket([]) == []


def test_length_bucket_custom_edges() -> None:
    assert slices.length_bucket(["ab", "abc", "abcd", "abcdef"], edges=(2, 3, 5)) == [
        "<=2 chars",
        "3 chars",
        "4-5 chars",
        ">5 chars",
    ]


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ((), "must not be empty"),
        ((200, 50), "strictly increasing"),
        ((10, 10), "strictly increasing"),
        ((-1,), "non-negative integers"),
        ((2.5,), "non-negative integers"),
    ],
)
def test_length_bucket_bad_edges(edges: tuple[object, ...], message: str) -> None:
    with pytest.raises(DataError, match=message):
        slices.length_bucket(["a"], edges=edges)  # type: ignore[arg-type]


def test_length_bucket_rejects_non_strings() -> None:
    with pytest.raises(DataError, match=r"texts\[1\] is NoneType, not a string"):
        slices.length_bucket(["a", None])  # type: ignore[list-item]


def test_slice_metrics_match_scikit_learn_per_group() -> None:
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(19)
    k = 3
    true = rng.integers(0, k, size=600)
    pred = _predictions(rng, true, 0.75, k)
    groups = rng.choice(np.array(["web", "email", "chat"], dtype=object), size=600).tolist()
    groups[:5] = [None] * 5

    result = slices.slice_metrics(true, pred, k, groups)

    assert list(result) == ["None", "chat", "email", "web"]
    for name, score in result.items():
        mask = np.array([str(g) == name for g in groups])
        assert score.n == mask.sum()
        assert score.accuracy == pytest.approx(accuracy_score(true[mask], pred[mask]))
        assert score.macro_f1 == pytest.approx(
            f1_score(true[mask], pred[mask], labels=list(range(k)), average="macro", zero_division=0)
        )
    assert SliceScore.from_dict(json.loads(json.dumps(result["web"].to_dict()))) == result["web"]


def test_slice_metrics_with_length_buckets() -> None:
    texts = ["short", "x" * 100, "y" * 120, "z" * 300]
    result = slices.slice_metrics([0, 1, 1, 0], [0, 1, 0, 0], 2, slices.length_bucket(texts))

    assert result["<=50 chars"] == SliceScore(n=1, accuracy=1.0, macro_f1=0.5)
    assert result["51-200 chars"].n == 2
    assert result["51-200 chars"].accuracy == 0.5
    assert result[">200 chars"].n == 1


def test_slice_metrics_bad_inputs() -> None:
    with pytest.raises(DataError, match="true_idx has 3 rows but groups has 2"):
        slices.slice_metrics([0, 1, 1], [0, 1, 1], 2, ["a", "b"])
    with pytest.raises(DataError, match=r"pred_idx\[0\] = 5 is outside"):
        slices.slice_metrics([0], [5], 2, ["a"])
