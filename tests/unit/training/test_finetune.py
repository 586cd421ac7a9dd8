"""finetune on the tiny local BERT: it learns, saves safetensors only, stops early, is reproducible,
and bad inputs fail with a message naming the culprit and leave nothing behind."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.metrics import f1_score

from refinery.errors import TrainingError
from refinery.modeling import load_classifier
from refinery.training.finetune import finetune
from refinery.training.records import TRAINING_JSON, TrainingResult

POSITIVE = ["good", "great", "excellent", "love it", "perfect", "works well"]
NEGATIVE = ["bad", "awful", "terrible", "hate it", "broken", "stopped working"]
ASPECTS = ["battery", "screen", "price", "sound", "delivery", "camera"]

# Fast enough to learn the toy task in a few epochs on the tiny model.
LEARN = ["training.learning_rate=0.005", "training.batch_size=16", "model.max_length=32"]


def learnable(n: int, seed: int) -> pd.DataFrame:
    """Reviews whose label is given away by one sentiment word."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("negative", "positive")[i % 2]
        word = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        rows.append(
            {"text": f"The {rng.choice(ASPECTS)} is {word}, said my {rng.choice(ASPECTS)}.", "label": label}
        )
    return pd.DataFrame(rows, columns=["text", "label"])


def write_splits(data_dir: Path, train: pd.DataFrame, validation: pd.DataFrame) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    train.to_parquet(data_dir / "train.parquet", index=False)
    validation.to_parquet(data_dir / "validation.parquet", index=False)
    return data_dir


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return write_splits(tmp_path / "prepared", learnable(240, seed=1), learnable(60, seed=2))


def macro_f1(model_dir: Path, frame: pd.DataFrame) -> float:
    clf = load_classifier(model_dir, max_length=32)
    predicted = [p.label for p in clf.predict(list(frame["text"]))]
    return float(f1_score(frame["label"], predicted, average="macro"))


def training_runs(cfg: Any) -> list[Any]:
    """The MLflow runs in the configured registry's experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.registry.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.registry.experiment)
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def assert_nothing_written(out_dir: Path) -> None:
    assert not out_dir.exists()
    # Neither the staging copy nor the checkpoint folder survives a failure.
    assert not list(out_dir.parent.glob(f".{out_dir.name}*"))


def test_finetune_learns_and_saves_a_safetensors_model(
    make_config: Callable[..., object], tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config([*LEARN, "training.epochs=8", "training.early_stopping_patience=3"])
    validation = pd.read_parquet(data_dir / "validation.parquet")
    untrained = macro_f1(tiny_model_dir, validation)
    out_dir = tmp_path / "models" / "candidate"

    result = finetune(cfg, data_dir, out_dir)

    assert result.best_validation_macro_f1 >= 0.9
    assert result.best_validation_macro_f1 > untrained + 0.3
    # The saved model is the best epoch's: reloading it reproduces the recorded score.
    assert macro_f1(out_dir, validation) == pytest.approx(result.best_validation_macro_f1)
    assert result.best_validation_macro_f1 == max(h["validation_macro_f1"] for h in result.history)
    assert result.train_samples == 240 and result.validation_samples == 60
    assert result.device == "cpu" and result.labels == ("negative", "positive") and result.max_length == 32
    assert result.global_steps > 0 and result.train_seconds > 0 and result.train_samples_per_second > 0
    assert [h["epoch"] for h in result.history] == [float(e) for e in range(1, len(result.history) + 1)]

    files = {p.name for p in out_dir.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        TRAINING_JSON,
    } <= files
    pickles = [p for p in out_dir.rglob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".pickle"}]
    assert pickles == []
    assert sorted(p.name for p in out_dir.parent.iterdir()) == ["candidate"]  # no temp dirs left
    config = json.loads((out_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert TrainingResult.from_json(out_dir / TRAINING_JSON) == result
    metrics = result.metrics()
    assert metrics["validation_macro_f1"] == result.best_validation_macro_f1
    assert all(isinstance(v, float) for v in metrics.values())


def test_max_length_truncates_what_the_model_sees(make_config: Callable[..., object], tmp_path: Path) -> None:
    """The sentiment word comes after ten words: cut at 8 tokens, every text reads the same and nothing
    is learned; at 32 the word is seen and the task is learned."""
    padded = [learnable(240, seed=1), learnable(60, seed=2)]
    for frame in padded:
        frame["text"] = "the " * 10 + frame["text"].str.split(" is ").str[1]
    data = write_splits(tmp_path / "prefixed", *padded)
    scores = {}
    for length in (8, 32):
        cfg = make_config([*LEARN, "training.epochs=3", f"model.max_length={length}"])
        result = finetune(cfg, data, tmp_path / f"len{length}")
        assert result.max_length == length
        scores[length] = result.best_validation_macro_f1
    assert scores[8] < 0.6 < 0.9 < scores[32]


def test_early_stopping_ends_training_when_macro_f1_stalls(
    make_config: Callable[..., object], data_dir: Path, tmp_path: Path
) -> None:
    # A learning rate this small changes nothing, so the second epoch already fails to improve.
    cfg = make_config(
        [*LEARN, "training.learning_rate=1e-9", "training.epochs=6", "training.early_stopping_patience=1"]
    )
    result = finetune(cfg, data_dir, tmp_path / "out")
    assert result.stopped_early
    assert result.epochs_run == 2.0 < 6
    assert len(result.history) == 2


def test_a_full_run_is_not_reported_as_stopped_early(
    make_config: Callable[..., object], data_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config(
        [*LEARN, "training.learning_rate=1e-9", "training.epochs=2", "training.early_stopping_patience=1"]
    )
    result = finetune(cfg, data_dir, tmp_path / "out")
    assert result.epochs_run == 2.0
    assert not result.stopped_early


def test_seeded_runs_are_identical(
    make_config: Callable[..., object], data_dir: Path, tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    cfg = make_config([*LEARN, "training.epochs=2"])
    first = finetune(cfg, data_dir, tmp_path / "first")
    second = finetune(cfg, data_dir, tmp_path / "second")
    assert first.history == second.history
    assert first.train_loss == second.train_loss
    assert first.best_validation_macro_f1 == second.best_validation_macro_f1
    a, b = (
        load_file(tmp_path / "first" / "model.safetensors"),
        load_file(tmp_path / "second" / "model.safetensors"),
    )
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("head", ["none", "three-labels"])
def test_a_base_with_another_head_gets_a_new_one(
    make_config: Callable[..., object], tiny_model_dir: Path, data_dir: Path, tmp_path: Path, head: str
) -> None:
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    base = tmp_path / f"base-{head}"
    if head == "none":  # a plain BertModel checkpoint, like a sentence-embedding model
        AutoModel.from_pretrained(tiny_model_dir).save_pretrained(base)
    else:
        AutoModelForSequenceClassification.from_pretrained(
            tiny_model_dir,
            num_labels=3,
            id2label={0: "a", 1: "b", 2: "c"},
            label2id={"a": 0, "b": 1, "c": 2},
            ignore_mismatched_sizes=True,
        ).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(base)
    cfg = make_config([*LEARN, f"model.base={base}", "training.max_steps=3"])

    result = finetune(cfg, data_dir, tmp_path / "out")

    assert result.global_steps == 3
    assert load_classifier(tmp_path / "out").labels == ("negative", "positive")


def test_missing_base_model_is_named(
    make_config: Callable[..., object], data_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config([f"model.base={tmp_path / 'no-such-model'}"])
    out_dir = tmp_path / "out"
    with pytest.raises(
        TrainingError, match=r"base model directory not found: .*no-such-model \(model\.base\)"
    ):
        finetune(cfg, data_dir, out_dir)
    assert_nothing_written(out_dir)


def test_base_without_safetensors_is_refused(
    make_config: Callable[..., object], tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    base = tmp_path / "pickled-base"
    base.mkdir()
    (base / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (base / "pytorch_model.bin").write_bytes(b"pickle")
    out_dir = tmp_path / "out"
    with pytest.raises(TrainingError, match=r"pickled-base \(model\.base\) holds no model\.safetensors"):
        finetune(make_config([f"model.base={base}"]), data_dir, out_dir)
    assert_nothing_written(out_dir)


def test_unloadable_base_model_is_named(
    make_config: Callable[..., object], tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    base = tmp_path / "broken-base"
    base.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (base / name).write_text((tiny_model_dir / name).read_text())
    (base / "model.safetensors").write_bytes(b"garbage")
    out_dir = tmp_path / "out"
    with pytest.raises(TrainingError, match=r"cannot load base model .*broken-base \(model\.base\)"):
        finetune(make_config([f"model.base={base}"]), data_dir, out_dir)
    assert_nothing_written(out_dir)


def test_unknown_label_is_named(make_config: Callable[..., object], tmp_path: Path) -> None:
    train = learnable(40, seed=1)
    train.loc[3, "label"] = "neutral"
    data_dir = write_splits(tmp_path / "prepared", train, learnable(20, seed=2))
    out_dir = tmp_path / "out"
    with pytest.raises(TrainingError, match=r"train\.parquet: label\(s\) 'neutral' are not in data\.labels"):
        finetune(make_config(), data_dir, out_dir)
    assert_nothing_written(out_dir)


def test_empty_training_split_is_refused(make_config: Callable[..., object], tmp_path: Path) -> None:
    data_dir = write_splits(tmp_path / "prepared", learnable(0, seed=1), learnable(20, seed=2))
    out_dir = tmp_path / "out"
    with pytest.raises(TrainingError, match=r"train split .*train\.parquet has no rows"):
        finetune(make_config(), data_dir, out_dir)
    assert_nothing_written(out_dir)


def test_missing_split_file_is_named(
    make_config: Callable[..., object], data_dir: Path, tmp_path: Path
) -> None:
    (data_dir / "validation.parquet").unlink()
    with pytest.raises(TrainingError, match=r"validation split not found: .*validation\.parquet"):
        finetune(make_config(), data_dir, tmp_path / "out")


def test_missing_column_is_named(make_config: Callable[..., object], tmp_path: Path) -> None:
    train = learnable(40, seed=1).rename(columns={"text": "review"})
    data_dir = write_splits(tmp_path / "prepared", train, learnable(20, seed=2))
    with pytest.raises(TrainingError, match=r"train\.parquet: missing column\(s\) text"):
        finetune(make_config(), data_dir, tmp_path / "out")


def test_a_failure_during_training_keeps_the_previous_model(
    make_config: Callable[..., object], data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import Trainer

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "previous.txt").write_text("the model from the last run")

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated crash in the middle of training")

    # Stands in for a crash (out of memory, interrupted job) half-way through training.
    monkeypatch.setattr(Trainer, "train", fail)
    cfg = make_config(["training.epochs=1"])
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, data_dir, out_dir)
    assert [p.name for p in out_dir.iterdir()] == ["previous.txt"]
    # No staging or checkpoint folder is left; "state" holds the MLflow run, closed as failed.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "prepared", "reviews.csv", "state"]
    assert [run.info.status for run in training_runs(cfg)] == ["FAILED"]


def test_an_existing_output_dir_is_replaced(
    make_config: Callable[..., object], data_dir: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "stale.txt").write_text("old")
    finetune(make_config([*LEARN, "training.max_steps=2"]), data_dir, out_dir)
    assert not (out_dir / "stale.txt").exists()
    assert (out_dir / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".out*"))


def write_class_weights(data_dir: Path, weights: dict[str, float] | None) -> None:
    """The part of prepared.json fine-tuning reads."""
    (data_dir / "prepared.json").write_text(json.dumps({"data_sha256": "ab" * 32, "class_weights": weights}))


def test_class_weights_in_prepared_data_weight_the_training_loss(
    make_config: Callable[..., object], data_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config([*LEARN, "training.max_steps=3"])
    plain = finetune(cfg, data_dir, tmp_path / "plain")
    write_class_weights(data_dir, {"negative": 1.0, "positive": 1.0})
    even = finetune(cfg, data_dir, tmp_path / "even")
    write_class_weights(data_dir, {"negative": 3.0, "positive": 0.25})
    skewed = finetune(cfg, data_dir, tmp_path / "skewed")

    assert plain.class_weights is None and not plain.class_weighted
    assert plain.metrics()["class_weighted"] == 0.0
    assert skewed.class_weights == {"negative": 3.0, "positive": 0.25} and skewed.class_weighted
    assert skewed.metrics()["class_weighted"] == 1.0
    assert TrainingResult.from_json(tmp_path / "skewed" / TRAINING_JSON) == skewed
    # Weights of 1 give the plain cross-entropy; other weights change what is learned.
    assert even.train_loss == pytest.approx(plain.train_loss, rel=1e-5)
    assert skewed.train_loss != pytest.approx(plain.train_loss, rel=1e-3)
    # The validation loss stays unweighted.
    assert even.validation_loss == pytest.approx(plain.validation_loss, rel=1e-5)


def test_class_weights_not_matching_the_labels_are_refused(
    make_config: Callable[..., object], data_dir: Path, tmp_path: Path
) -> None:
    write_class_weights(data_dir, {"negative": 1.0, "neutral": 2.0})
    out_dir = tmp_path / "out"
    with pytest.raises(TrainingError, match=r"prepared\.json: class_weights must give one weight per label"):
        finetune(make_config(["training.max_steps=1"]), data_dir, out_dir)
    assert_nothing_written(out_dir)
