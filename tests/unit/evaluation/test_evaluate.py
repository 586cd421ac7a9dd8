"""evaluate() with the tiny model: the three outputs, one test set for both models, bad inputs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from refinery.errors import DataError, RegistryError
from refinery.evaluation.evaluate import evaluate
from refinery.evaluation.result import EvaluationResult


@pytest.fixture
def data_dir(tmp_path: Path, demo_df: pd.DataFrame) -> Path:
    folder = tmp_path / "prepared"
    folder.mkdir()
    demo_df.sample(n=48, random_state=1).to_parquet(folder / "test.parquet", index=False)
    return folder


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_writes_three_outputs_and_scores_both_models_on_one_test_set(
    make_config: Callable[..., object], tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    from refinery.modeling import load_classifier

    cfg = make_config()
    out = tmp_path / "evaluation"
    result = evaluate(cfg, data_dir, tiny_model_dir, tiny_model_dir, out, champion_version="4")

    assert sorted(p.name for p in out.iterdir()) == [
        "confusion_matrix.png",
        "evaluation.json",
        "monitoring",
        "predictions.parquet",
    ]
    assert sorted(p.name for p in (out / "monitoring").iterdir()) == [
        "embeddings.npy",
        "reference_stats.json",
    ]
    assert _leftovers(tmp_path) == []
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    test = pd.read_parquet(data_dir / "test.parquet")
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert list(predictions.columns) == [
        "text",
        "label",
        "length",
        "challenger_pred",
        "challenger_proba",
        "champion_pred",
        "champion_proba",
    ]
    assert predictions["text"].tolist() == test["text"].tolist()
    assert predictions["label"].tolist() == test["label"].tolist()
    # The same model as challenger and champion on the same rows gives the same predictions.
    assert predictions["challenger_pred"].tolist() == predictions["champion_pred"].tolist()
    expected = [
        p.label for p in load_classifier(tiny_model_dir, max_length=64).predict(test["text"].tolist())
    ]
    assert predictions["challenger_pred"].tolist() == expected

    assert result.test_rows == len(test) == result.challenger.n == result.champion.n
    # Same model, same scores; only the measured latencies differ.
    timing = {"mean_latency_ms": None, "p95_latency_ms": None}
    assert replace(result.champion, **timing) == replace(result.challenger, **timing)
    assert result.challenger.p95_latency_ms >= result.challenger.mean_latency_ms > 0
    assert result.challenger.log_loss > 0 and 0 <= result.challenger.ece <= 1
    assert 0 <= result.challenger.roc_auc <= 1 and 0 <= result.challenger.average_precision <= 1
    assert sum(s.n for s in result.challenger.slices["length"].values()) == len(test)
    # Identical predictions: a zero difference, no discordant rows.
    assert result.comparison is not None
    assert (result.comparison.bootstrap.low, result.comparison.bootstrap.high) == (0.0, 0.0)
    assert (result.comparison.mcnemar.b, result.comparison.mcnemar.c) == (0, 0)
    assert result.champion_version == "4"
    assert result.labels == ("negative", "positive")
    assert sum(map(sum, result.challenger.confusion_matrix)) == len(test)
    assert EvaluationResult.from_json(out / "evaluation.json") == result
    written = json.loads((out / "evaluation.json").read_text())
    assert set(written) == {
        "labels",
        "test_rows",
        "challenger",
        "champion",
        "champion_version",
        "comparison",
        "retention",
        "no_change",
    }
    # The champion itself as challenger: the same weights, so no change.
    assert result.no_change is not None and "weights hash the same as champion v4's" in result.no_change


def test_first_model_has_no_champion(
    make_config: Callable[..., object], tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "evaluation"
    out.mkdir()  # an existing (empty) output folder, as a KFP artifact path can be, is filled in place
    result = evaluate(make_config(), data_dir, tiny_model_dir, None, out)

    assert result.champion is None
    assert result.champion_version is None
    assert json.loads((out / "evaluation.json").read_text())["champion"] is None
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert predictions["champion_pred"].isna().all()
    assert (out / "confusion_matrix.png").stat().st_size > 0
    assert _leftovers(tmp_path) == []


def test_champion_with_another_label_set_is_refused_by_name(
    make_config: Callable[..., object], tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    champion = tmp_path / "champion"
    shutil.copytree(tiny_model_dir, champion)
    config = json.loads((champion / "config.json").read_text())
    config["id2label"] = {"0": "bad", "1": "good"}
    config["label2id"] = {"bad": 0, "good": 1}
    (champion / "config.json").write_text(json.dumps(config))
    out = tmp_path / "evaluation"

    with pytest.raises(
        RegistryError, match=r"champion version 9 .*\['bad', 'good'\].*\['negative', 'positive'\]"
    ):
        evaluate(make_config(), data_dir, tiny_model_dir, champion, out, champion_version="9")
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_missing_test_set_is_named_and_nothing_is_written(
    make_config: Callable[..., object], tiny_model_dir: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "prepared"
    empty.mkdir()
    out = tmp_path / "evaluation"

    with pytest.raises(DataError, match=r"test set not found: .*prepared/test\.parquet"):
        evaluate(make_config(), empty, tiny_model_dir, None, out)
    assert not out.exists()


def test_undeclared_label_in_test_set_is_named(
    make_config: Callable[..., object], tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "prepared"
    folder.mkdir()
    pd.DataFrame({"text": ["fine", "meh"], "label": ["positive", "neutral"]}).to_parquet(
        folder / "test.parquet"
    )

    with pytest.raises(DataError, match=r"undeclared label\(s\) \['neutral'\]"):
        evaluate(make_config(), folder, tiny_model_dir, None, tmp_path / "evaluation")


def test_retention_set_and_slice_columns_are_scored_for_both_models(
    make_config: Callable[..., object], tiny_model_dir: Path, demo_df: pd.DataFrame, tmp_path: Path
) -> None:
    folder = tmp_path / "prepared"
    folder.mkdir()
    test = demo_df.sample(n=60, random_state=1).assign(shop=[("north", "south")[i % 2] for i in range(60)])
    test.to_parquet(folder / "test.parquet", index=False)
    earlier = tmp_path / "earlier.csv"
    demo_df.sample(n=40, random_state=2).assign(text=lambda f: "  " + f["text"]).to_csv(earlier, index=False)
    cfg = make_config(
        [f"data.retention_uri={earlier}", "data.slice_columns=[shop]", "evaluation.latency_samples=0"]
    )

    result = evaluate(
        cfg, folder, tiny_model_dir, tiny_model_dir, tmp_path / "evaluation", champion_version="2"
    )

    assert result.retention is not None and result.retention.n == 40
    assert result.retention.champion == result.retention.challenger  # same model
    assert {name: s.n for name, s in result.challenger.slices["shop"].items()} == {"north": 30, "south": 30}
    assert result.challenger.mean_latency_ms is None  # latency_samples=0
    predictions = pd.read_parquet(tmp_path / "evaluation" / "predictions.parquet")
    assert predictions["shop"].tolist() == test["shop"].tolist()


def test_a_slice_column_missing_from_the_test_set_is_named(
    make_config: Callable[..., object], tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match=r"lacks column\(s\) \['shop'\].*data.slice_columns"):
        evaluate(make_config(["data.slice_columns=[shop]"]), data_dir, tiny_model_dir, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_change_by_weights_or_by_every_prediction(tmp_path: Path) -> None:
    import numpy as np

    from refinery.evaluation.scoring import no_change

    ours, theirs, same = tmp_path / "ours", tmp_path / "theirs", tmp_path / "same"
    for folder, content in ((ours, b"weights a"), (theirs, b"weights b"), (same, b"weights a")):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(content)
    test = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    retention = np.array([[0.3, 0.7]])
    assert "weights hash the same as v1's" in str(no_change(ours, same, [test], [test * 0.5], "v1"))
    # Other weights, but the same label on every row of both scored sets: still no change.
    softer = np.array([[0.6, 0.4], [0.4, 0.6], [0.51, 0.49]])
    reason = no_change(ours, theirs, [test, retention], [softer, retention], "v1")
    assert reason == "the challenger predicts the same label as v1 on all 4 scored rows"
    # One row of the retention set predicted otherwise: a change.
    assert no_change(ours, theirs, [test, retention], [softer, retention[:, ::-1]], "v1") is None
