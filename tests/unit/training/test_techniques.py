"""The fine-tuning techniques of ``training``, each shown by its effect on a tiny local BERT: which
weights change, the optimizer's learning rates, the loss, the saved config, the number of optimizer
steps; LoRA's merged and adapter outputs; and the MLflow run that records a training."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.unit.training.test_finetune import LEARN, learnable, training_runs, write_splits

from refinery import modeling
from refinery.errors import TrainingError
from refinery.modeling import load_classifier
from refinery.training import techniques
from refinery.training.finetune import finetune
from refinery.training.records import TRAINING_JSON, TrainingResult

EMBEDDINGS = "bert.embeddings."
HEAD = ("classifier.", "bert.pooler.")


def layer(i: int) -> str:
    return f"bert.encoder.layer.{i}."


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    """64 training rows: 4 steps an epoch at batch size 16."""
    return write_splits(tmp_path / "small", learnable(64, seed=1), learnable(32, seed=2))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """240 training rows: 15 steps an epoch at batch size 16."""
    return write_splits(tmp_path / "prepared", learnable(240, seed=1), learnable(60, seed=2))


def weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(model_dir / "model.safetensors")


def changed(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> set[str]:
    """Names of the tensors that differ."""
    assert before.keys() == after.keys()
    return {name for name in before if not np.array_equal(before[name], after[name])}


def under(names: set[str], *prefixes: str) -> set[str]:
    return {name for name in names if name.startswith(prefixes)}


# -- finding the layers -----------------------------------------------------------------------------


def tiny(kind: str) -> Any:
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        GPT2Config,
        GPT2ForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    small = {"vocab_size": 64, "num_attention_heads": 2}
    if kind == "bert":
        return BertForSequenceClassification(
            BertConfig(**small, hidden_size=16, num_hidden_layers=3, intermediate_size=32)
        )
    if kind == "roberta":
        return RobertaForSequenceClassification(
            RobertaConfig(**small, hidden_size=16, num_hidden_layers=3, intermediate_size=32)
        )
    if kind == "distilbert":
        return DistilBertForSequenceClassification(
            DistilBertConfig(vocab_size=64, dim=16, n_layers=3, n_heads=2, hidden_dim=32)
        )
    return GPT2ForSequenceClassification(GPT2Config(vocab_size=64, n_embd=16, n_layer=3, n_head=2))


@pytest.mark.parametrize(
    ("kind", "layers", "heads"),
    [
        ("bert", "bert.encoder.layer", ("classifier",)),
        ("roberta", "roberta.encoder.layer", ("classifier",)),
        ("distilbert", "distilbert.transformer.layer", ("pre_classifier", "classifier")),
    ],
)
def test_encoder_layers_are_found_for_bert_roberta_and_distilbert(
    kind: str, layers: str, heads: tuple[str, ...]
) -> None:
    model = tiny(kind)
    parts = techniques.encoder_parts(model)
    assert parts.model_type == kind
    assert parts.layers == tuple(model.get_submodule(layers))
    assert parts.embeddings is model.get_submodule(f"{layers.split('.')[0]}.embeddings")
    assert techniques.head_module_names(model) == heads


def test_an_unknown_layout_is_named_by_model_type() -> None:
    with pytest.raises(TrainingError, match=r"cannot find the encoder layers of the 'gpt2' model"):
        techniques.encoder_parts(tiny("gpt2"))


# -- freezing ------------------------------------------------------------------------------------------


def test_frozen_embeddings_and_lowest_layer_keep_their_weights(
    make_config: Callable[..., Any], tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config(
        [*LEARN, "training.max_steps=4", "training.freeze_embeddings=true", "training.freeze_layers=1"]
    )
    result = finetune(cfg, data_dir, tmp_path / "out")

    moved = changed(weights(tiny_model_dir), weights(tmp_path / "out"))
    # Weight decay is on (0.01): a frozen weight in the optimizer would still shrink.
    assert under(moved, EMBEDDINGS, layer(0)) == set()
    assert under(moved, layer(1)) and under(moved, *HEAD)
    applied = result.techniques
    assert applied is not None
    assert applied.frozen_embeddings and applied.frozen_layers == (0,) and applied.encoder_layers == 2
    everything = sum(v.size for v in weights(tiny_model_dir).values())
    frozen = sum(v.size for k, v in weights(tiny_model_dir).items() if k.startswith((EMBEDDINGS, layer(0))))
    assert applied.total_parameters == everything
    assert applied.trainable_parameters == everything - frozen
    assert applied.trainable_share == pytest.approx((everything - frozen) / everything, abs=1e-6)


def test_unfrozen_training_changes_every_part(
    make_config: Callable[..., Any], tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    result = finetune(make_config([*LEARN, "training.max_steps=4"]), data_dir, tmp_path / "out")
    moved = changed(weights(tiny_model_dir), weights(tmp_path / "out"))
    for part in (EMBEDDINGS, layer(0), layer(1), *HEAD):
        assert under(moved, part), part
    assert result.techniques is not None
    assert not result.techniques.frozen_embeddings and result.techniques.frozen_layers == ()
    assert result.techniques.trainable_share == 1.0


def test_freezing_more_layers_than_the_model_has_is_refused(
    make_config: Callable[..., Any], data_dir: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    with pytest.raises(TrainingError, match=r"freeze_layers=3 exceeds the 2 encoder layers of the 'bert'"):
        finetune(make_config(["training.freeze_layers=3"]), data_dir, out_dir)
    assert not out_dir.exists() and not list(tmp_path.glob(".out*"))


# -- gradual unfreezing ----------------------------------------------------------------------------------


def test_unfreezing_schedule_goes_from_the_top_then_the_embeddings() -> None:
    assert techniques.unfrozen_at(0, [0, 1, 2], True) == (set(), False)
    assert techniques.unfrozen_at(1, [0, 1, 2], True) == ({2}, False)
    assert techniques.unfrozen_at(3, [0, 1, 2], True) == ({0, 1, 2}, False)
    assert techniques.unfrozen_at(4, [0, 1, 2], True) == ({0, 1, 2}, True)
    # Layers frozen for good (freeze_layers=1, freeze_embeddings) never join.
    assert techniques.unfrozen_at(5, [1, 2], False) == ({1, 2}, False)


def test_gradual_unfreezing_trains_the_head_first_then_one_more_layer_per_epoch(
    make_config: Callable[..., Any],
    tiny_model_dir: Path,
    small_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Snapshot the weights at the end of every epoch (the saved model is only the best epoch's).
    snapshots: list[dict[str, np.ndarray]] = []
    build = techniques.gradual_unfreezing

    def spied(parts: techniques.EncoderParts) -> Any:
        callback = build(parts)

        def on_epoch_end(args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            snapshots.append({k: v.detach().numpy().copy() for k, v in model.state_dict().items()})

        callback.on_epoch_end = on_epoch_end
        return callback

    monkeypatch.setattr(techniques, "gradual_unfreezing", spied)
    cfg = make_config(
        [
            *LEARN,
            "training.epochs=4",
            "training.early_stopping_patience=4",
            "training.gradual_unfreezing=true",
        ]
    )
    result = finetune(cfg, small_data, tmp_path / "out")

    base = weights(tiny_model_dir)
    steps = [{k: v for k, v in s.items() if k in base} for s in snapshots]
    assert len(steps) == 4
    head = under(changed(base, steps[0]), *HEAD)
    assert head and changed(base, steps[0]) == head  # epoch 1: the head (classifier and pooler) only
    assert under(changed(steps[0], steps[1]), EMBEDDINGS, layer(0)) == set()  # epoch 2: + top layer
    assert under(changed(steps[0], steps[1]), layer(1))
    assert under(changed(steps[1], steps[2]), EMBEDDINGS) == set()  # epoch 3: + the layer below
    assert under(changed(steps[1], steps[2]), layer(0))
    assert under(changed(steps[2], steps[3]), EMBEDDINGS)  # epoch 4: + the embeddings
    assert [h["unfrozen_layers"] for h in result.history] == [0.0, 1.0, 2.0, 2.0]
    assert result.techniques is not None and result.techniques.gradual_unfreezing
    assert not result.techniques.frozen_embeddings and result.techniques.frozen_layers == ()


def test_gradual_unfreezing_keeps_frozen_layers_frozen(
    make_config: Callable[..., Any], tiny_model_dir: Path, small_data: Path, tmp_path: Path
) -> None:
    cfg = make_config(
        [
            *LEARN,
            "training.epochs=3",
            "training.early_stopping_patience=3",
            "training.gradual_unfreezing=true",
            "training.freeze_layers=1",
        ]
    )
    result = finetune(cfg, small_data, tmp_path / "out")
    assert under(changed(weights(tiny_model_dir), weights(tmp_path / "out")), layer(0)) == set()
    # Epoch 1: the head; epoch 2: + layer 1; epoch 3: + the embeddings (layer 0 stays frozen).
    assert [h["unfrozen_layers"] for h in result.history] == [0.0, 1.0, 1.0]
    assert result.techniques is not None
    assert result.techniques.frozen_layers == (0,) and not result.techniques.frozen_embeddings


# -- layer-wise learning-rate decay -----------------------------------------------------------------------


def test_layer_lr_decay_groups_decay_from_the_top_and_spare_biases_and_layernorms_weight_decay(
    tiny_model_dir: Path,
) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    parts = techniques.encoder_parts(model)
    techniques.freeze(parts, embeddings=False, lowest_layers=0)
    model.classifier.bias.requires_grad_(False)  # a frozen parameter is left out

    groups = techniques.optimizer_groups(model, learning_rate=1e-3, weight_decay=0.01, layer_lr_decay=0.5)

    assert techniques.group_learning_rates(groups) == {
        "head": 1e-3,
        "layer.1": 1e-3,
        "layer.0": 5e-4,
        "embeddings": 2.5e-4,
    }
    assert groups[0]["name"] == "head"  # the Trainer logs the first group's rate
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = {names[id(p)]: g for g in groups for p in g["params"]}
    assert set(grouped) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert "classifier.bias" not in grouped
    assert sum(len(g["params"]) for g in groups) == len(grouped)  # each parameter once
    for name, group in grouped.items():
        no_decay = name.endswith("bias") or "LayerNorm" in name
        assert group["weight_decay"] == (0.0 if no_decay else 0.01), name
        assert group["name"].endswith(".no_decay") == no_decay
    assert grouped["bert.encoder.layer.0.attention.self.query.weight"]["lr"] == 5e-4
    assert grouped["bert.embeddings.LayerNorm.weight"]["lr"] == 2.5e-4
    assert grouped["bert.pooler.dense.weight"]["lr"] == 1e-3


def test_without_layer_lr_decay_there_is_one_rate() -> None:
    groups = techniques.optimizer_groups(tiny("bert"), learning_rate=1e-3, weight_decay=0.01)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [
        ("all", 1e-3, 0.01),
        ("all.no_decay", 1e-3, 0.0),
    ]


def test_layer_lr_decay_slows_the_lower_layers(
    make_config: Callable[..., Any], tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config([*LEARN, "training.max_steps=4", "training.layer_lr_decay=0.1"])
    result = finetune(cfg, data_dir, tmp_path / "out")

    assert result.techniques is not None
    assert result.techniques.layer_learning_rates == pytest.approx(
        {"head": 0.005, "layer.1": 0.005, "layer.0": 0.0005, "embeddings": 0.00005}
    )
    base, trained = weights(tiny_model_dir), weights(tmp_path / "out")

    def mean_step(prefix: str) -> float:
        return float(np.mean([np.abs(trained[k] - base[k]).mean() for k in base if k.startswith(prefix)]))

    # Adam's steps scale with the learning rate: each level down moves about 10x less.
    assert mean_step(layer(0)) < 0.3 * mean_step(layer(1))
    assert mean_step(EMBEDDINGS) < 0.3 * mean_step(layer(0))


# -- loss, dropout, schedule, accumulation --------------------------------------------------------------


def test_label_smoothing_and_class_weights_change_the_loss() -> None:
    import torch

    logits = torch.tensor([[4.0, -4.0], [3.0, -1.0], [-2.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    plain = techniques.classification_loss(logits, labels)
    assert plain == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())

    smoothed = techniques.classification_loss(logits, labels, label_smoothing=0.2)
    log_p = torch.log_softmax(logits, dim=-1)
    by_hand = (0.8 * -log_p[range(3), labels] + 0.2 * -log_p.mean(dim=-1)).mean()
    assert smoothed == pytest.approx(by_hand.item()) and smoothed > plain

    even = techniques.classification_loss(logits, labels, class_weights=torch.tensor([1.0, 1.0]))
    skewed = techniques.classification_loss(logits, labels, class_weights=torch.tensor([1.0, 5.0]))
    assert even == pytest.approx(plain.item()) and skewed != pytest.approx(plain.item())
    both = techniques.classification_loss(
        logits, labels, class_weights=torch.tensor([1.0, 5.0]), label_smoothing=0.2
    )
    assert both != pytest.approx(skewed.item()) and both != pytest.approx(smoothed.item())


def test_label_smoothing_changes_the_training_loss_not_the_validation_loss(
    make_config: Callable[..., Any], data_dir: Path, tmp_path: Path
) -> None:
    from tests.unit.training.test_finetune import write_class_weights

    # A model that has learned the task, so its predictions are confident.
    confident = tmp_path / "confident"
    learned = finetune(make_config([*LEARN, "training.epochs=8"]), data_dir, confident)
    assert learned.validation_loss < 0.3
    # A learning rate this small leaves the weights as they are: every run scores the same model.
    still = [*LEARN, f"model.base={confident}", "training.learning_rate=1e-9", "training.epochs=1"]
    plain = finetune(make_config(still), data_dir, tmp_path / "plain")
    smoothing = [*still, "training.label_smoothing=0.3"]
    smoothed = finetune(make_config(smoothing), data_dir, tmp_path / "smoothed")
    write_class_weights(data_dir, {"negative": 3.0, "positive": 0.5})
    weighted = finetune(make_config(smoothing), data_dir, tmp_path / "weighted")

    # Confident right answers pay for the smoothed targets.
    assert smoothed.train_loss > plain.train_loss + 0.1
    assert weighted.train_loss != pytest.approx(smoothed.train_loss, rel=1e-3)
    # The validation loss stays the plain cross-entropy.
    assert smoothed.validation_loss == pytest.approx(plain.validation_loss, rel=1e-5)
    assert weighted.validation_loss == pytest.approx(plain.validation_loss, rel=1e-5)
    assert smoothed.techniques is not None and smoothed.techniques.label_smoothing == 0.3


def test_dropout_override_lands_in_the_saved_config(
    make_config: Callable[..., Any], data_dir: Path, tmp_path: Path
) -> None:
    result = finetune(
        make_config([*LEARN, "training.max_steps=1", "training.dropout=0.3"]), data_dir, tmp_path / "out"
    )
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["hidden_dropout_prob"] == 0.3 and config["attention_probs_dropout_prob"] == 0.3
    assert result.techniques is not None
    assert result.techniques.dropout == {"hidden_dropout_prob": 0.3, "attention_probs_dropout_prob": 0.3}
    model = load_classifier(tmp_path / "out")._model
    rates = {m.p for m in model.modules() if isinstance(m, type(model.dropout))}
    assert rates == {0.3}


def test_dropout_override_names_the_fields_of_other_models() -> None:
    from transformers import DistilBertConfig, GPT2Config

    config = DistilBertConfig()
    assert techniques.override_dropout(config, 0.25) == {"dropout": 0.25, "attention_dropout": 0.25}
    assert config.dropout == 0.25 and config.attention_dropout == 0.25
    with pytest.raises(TrainingError, match=r"'gpt2' model config has no hidden dropout field"):
        techniques.override_dropout(GPT2Config(), 0.25)


@pytest.mark.parametrize(
    ("scheduler", "shape"),
    [
        ("linear", lambda t: 1 - t),
        ("cosine", lambda t: 0.5 * (1 + math.cos(math.pi * t))),
        ("constant_with_warmup", lambda t: 1.0),
    ],
)
def test_scheduler_type_shapes_the_learning_rate(
    make_config: Callable[..., Any],
    small_data: Path,
    tmp_path: Path,
    scheduler: str,
    shape: Callable[[float], float],
) -> None:
    cfg = make_config(
        [
            *LEARN,
            "training.epochs=4",
            "training.early_stopping_patience=4",
            "training.warmup_ratio=0",
            f"training.scheduler={scheduler}",
        ]
    )
    result = finetune(cfg, small_data, tmp_path / "out")
    # 4 epochs of 4 steps; each epoch logs the rate of its last step (steps 3, 7, 11, 15 of 16, from 0).
    expected = [0.005 * shape((4 * epoch - 1) / 16) for epoch in (1, 2, 3, 4)]
    assert [h["learning_rate"] for h in result.history] == pytest.approx(expected, rel=1e-5)
    assert result.techniques is not None and result.techniques.scheduler == scheduler


def test_warmup_ramps_the_learning_rate_up_first(
    make_config: Callable[..., Any], small_data: Path, tmp_path: Path
) -> None:
    cfg = make_config(
        [
            *LEARN,
            "training.epochs=4",
            "training.early_stopping_patience=4",
            "training.warmup_ratio=0.5",
            "training.scheduler=constant_with_warmup",
        ]
    )
    result = finetune(cfg, small_data, tmp_path / "out")
    # 16 steps, the first 8 warming up: the rate at steps 3 and 7 (from 0) is 3/8 and 7/8 of the peak.
    expected = [0.005 * 3 / 8, 0.005 * 7 / 8, 0.005, 0.005]
    assert [h["learning_rate"] for h in result.history] == pytest.approx(expected, rel=1e-5)


def test_weight_decay_shrinks_weights_that_get_no_gradient(
    make_config: Callable[..., Any], tiny_model_dir: Path, small_data: Path, tmp_path: Path
) -> None:
    """Embedding rows of tokens that never occur get no gradient: AdamW's decoupled decay alone moves
    them, scaling each row down and keeping its direction; without decay they stay as loaded."""
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    key = "bert.embeddings.word_embeddings.weight"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [
        *pd.read_parquet(small_data / "train.parquet")["text"],
        *pd.read_parquet(small_data / "validation.parquet")["text"],
    ]
    used = {i for ids in tokenizer(texts)["input_ids"] for i in ids}
    initial = load_file(tiny_model_dir / "model.safetensors")[key]
    # Rows of tokens no text uses, leaving out all-zero rows (the padding token's).
    unused = [i for i in sorted(set(range(len(tokenizer))) - used) if np.abs(initial[i]).sum() > 0]
    assert len(unused) > 50
    loaded = initial[unused]
    rows = {}
    for decay in (0.0, 2.0):
        cfg = make_config([*LEARN, "training.epochs=2", f"training.weight_decay={decay}"])
        finetune(cfg, small_data, tmp_path / f"wd{decay}")
        rows[decay] = load_file(tmp_path / f"wd{decay}" / "model.safetensors")[key][unused]
    np.testing.assert_array_equal(rows[0.0], loaded)
    scale = np.linalg.norm(rows[2.0], axis=1) / np.linalg.norm(loaded, axis=1)
    assert (scale < 0.99).all() and np.ptp(scale) < 1e-4  # one factor for every row: the decay
    np.testing.assert_allclose(rows[2.0], loaded * scale[:, None], rtol=1e-4, atol=1e-7)


def test_gradient_accumulation_takes_fewer_optimizer_steps(
    make_config: Callable[..., Any], data_dir: Path, tmp_path: Path
) -> None:
    one = finetune(make_config([*LEARN, "training.epochs=1"]), data_dir, tmp_path / "one")
    three = finetune(
        make_config([*LEARN, "training.epochs=1", "training.gradient_accumulation_steps=3"]),
        data_dir,
        tmp_path / "three",
    )
    assert one.global_steps == 15 and three.global_steps == 5  # 240 rows, 15 batches of 16
    assert three.techniques is not None
    assert three.techniques.gradient_accumulation_steps == 3 and three.techniques.effective_batch_size == 48
    assert three.train_loss != pytest.approx(one.train_loss, rel=1e-3)


# -- device settings ---------------------------------------------------------------------------------------


def test_cuda_gets_mixed_precision_fused_adamw_sdpa_and_compile_on_request() -> None:
    bf16 = techniques.device_settings(cuda=True, bf16_supported=True, compile_requested=True)
    assert (bf16.bf16, bf16.fp16, bf16.precision) == (True, False, "bf16")
    assert bf16.optim == "adamw_torch_fused" and bf16.attn_implementation == "sdpa" and bf16.torch_compile
    fp16 = techniques.device_settings(cuda=True, bf16_supported=False, compile_requested=False)
    assert (fp16.bf16, fp16.fp16, fp16.precision, fp16.torch_compile) == (False, True, "fp16", False)


@pytest.mark.parametrize(
    ("cuda", "bf16_supported", "precision", "expected"),
    [
        (True, True, "fp32", "fp32"),
        (True, True, "fp16", "fp16"),
        (True, False, "fp16", "fp16"),
        (True, True, "bf16", "bf16"),
        (False, False, "auto", "fp32"),
        (False, True, "auto", "bf16"),
        (False, True, "fp32", "fp32"),
        (False, False, "fp32", "fp32"),
        (False, False, "bf16", "bf16"),
    ],
)
def test_precision_setting_picks_the_autocast(
    cuda: bool, bf16_supported: bool, precision: str, expected: str
) -> None:
    chosen = techniques.device_settings(
        cuda=cuda, bf16_supported=bf16_supported, compile_requested=False, precision=precision
    )
    assert chosen.precision == expected
    assert not (chosen.bf16 and chosen.fp16)


@pytest.mark.parametrize(
    ("cuda", "bf16_supported", "precision", "message"),
    [
        (False, False, "fp16", "fp16 needs a CUDA GPU"),
        (True, False, "bf16", "does not support bf16"),
    ],
)
def test_precision_the_device_cannot_do_is_refused(
    cuda: bool, bf16_supported: bool, precision: str, message: str
) -> None:
    with pytest.raises(TrainingError, match=message):
        techniques.device_settings(
            cuda=cuda, bf16_supported=bf16_supported, compile_requested=False, precision=precision
        )


def test_cpu_ignores_compile_and_autocasts_bf16_only_with_native_bf16(
    make_config: Callable[..., Any], data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="refinery.training.techniques"):
        result = finetune(
            make_config([*LEARN, "training.max_steps=1", "training.compile=true", "training.precision=auto"]),
            data_dir,
            tmp_path / "out",
        )
    assert "training.compile is ignored: torch.compile is used on CUDA only" in caplog.text
    applied = result.techniques
    assert applied is not None
    assert (applied.precision, applied.compiled) == (
        "bf16" if techniques.cpu_native_bf16() else "fp32",
        False,
    )
    assert applied.optimizer == "adamw_torch_fused"  # the Trainer's default with torch >= 2.8


def test_bf16_on_cpu_trains_and_learns(
    make_config: Callable[..., Any], data_dir: Path, tmp_path: Path
) -> None:
    result = finetune(
        make_config([*LEARN, "training.epochs=3", "training.precision=bf16"]), data_dir, tmp_path / "out"
    )
    assert result.techniques is not None and result.techniques.precision == "bf16"
    assert result.best_validation_macro_f1 >= 0.9


# -- LoRA ----------------------------------------------------------------------------------------------------

LORA = [*LEARN, "training.max_steps=6", "training.lora.enabled=true", "training.lora.r=4"]


def test_lora_trains_only_adapters_and_head_and_merges_into_a_plain_model(
    make_config: Callable[..., Any], tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    result = finetune(make_config(LORA), data_dir, tmp_path / "merged")
    out = tmp_path / "merged"

    assert {"model.safetensors", "config.json", "tokenizer.json", TRAINING_JSON} <= {
        p.name for p in out.iterdir()
    }
    assert not list(out.glob("adapter*")) and not list(out.rglob("*.bin"))
    moved = changed(weights(tiny_model_dir), weights(out))  # same names: a plain model
    # Merging adds the trained low-rank update to the targeted weights; every other base weight is as it was.
    assert under(moved, "bert.") == {
        f"{layer(i)}attention.self.{m}.weight" for i in (0, 1) for m in ("query", "value")
    }
    assert under(moved, "classifier.") == {"classifier.weight", "classifier.bias"}
    applied = result.techniques
    assert applied is not None and applied.lora is not None
    assert applied.lora.merged and applied.lora.target_modules == ("query", "value")
    assert applied.lora.modules_to_save == ("classifier",) and applied.lora.r == 4
    assert applied.trainable_share < 0.1 and applied.frozen_embeddings
    assert TrainingResult.from_json(out / TRAINING_JSON) == result
    validation = pd.read_parquet(data_dir / "validation.parquet")
    assert load_classifier(out).predict_proba(list(validation["text"])).shape == (60, 2)


def test_lora_adapter_mode_saves_the_adapter_and_predicts_as_the_merged_model(
    make_config: Callable[..., Any], tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    finetune(make_config(LORA), data_dir, tmp_path / "merged")
    result = finetune(make_config([*LORA, "training.lora.merge=false"]), data_dir, tmp_path / "adapter")
    out = tmp_path / "adapter"

    files = {p.name for p in out.iterdir()}
    assert {modeling.ADAPTER_CONFIG, modeling.ADAPTER_WEIGHTS, "config.json", TRAINING_JSON} <= files
    assert "model.safetensors" not in files and not list(out.rglob("*.bin"))
    adapter = load_file(out / modeling.ADAPTER_WEIGHTS)
    assert {k for k in adapter if "lora_B" in k} and all(
        np.abs(adapter[k]).sum() > 0 for k in adapter if "lora_B" in k
    )  # trained: lora_B starts at zero
    assert {k for k in adapter if "classifier" in k}  # the head travels with the adapter
    assert not {k for k in adapter if "lora" not in k and "classifier" not in k}  # no base weights
    assert json.loads((out / modeling.ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == str(
        tiny_model_dir
    )
    assert result.techniques is not None and result.techniques.lora is not None
    assert not result.techniques.lora.merged and result.techniques.lora.base_model == str(tiny_model_dir)
    assert modeling.is_adapter_dir(out) and not modeling.is_adapter_dir(tmp_path / "merged")

    texts = list(pd.read_parquet(data_dir / "validation.parquet")["text"])
    merged = load_classifier(tmp_path / "merged").predict_proba(texts)
    tokenizer = AutoTokenizer.from_pretrained(out)
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")

    def probabilities(model: Any) -> np.ndarray:
        model.eval()
        with torch.inference_mode():
            return torch.softmax(model(**encoded).logits, dim=-1).numpy()

    # The unmerged peft model (base + adapter) and the merged plain model give the same predictions.
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, config=AutoConfig.from_pretrained(out)
    )
    unmerged = PeftModel.from_pretrained(base, out)
    np.testing.assert_allclose(probabilities(unmerged), merged, atol=1e-5)
    np.testing.assert_allclose(probabilities(modeling.load_lora_classifier(out)), merged, atol=1e-5)
    # Evaluation and serving load the adapter folder like any model folder.
    np.testing.assert_allclose(load_classifier(out).predict_proba(texts), merged, atol=1e-5)


def test_lora_target_modules_missing_from_the_model_are_named(
    make_config: Callable[..., Any], data_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        TrainingError, match=r"training\.lora\.target_modules \['q_lin'\] do not fit the 'bert'"
    ):
        finetune(make_config([*LORA, "training.lora.target_modules=[q_lin]"]), data_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- MLflow --------------------------------------------------------------------------------------------------


def test_each_training_is_an_mlflow_run_with_params_and_epoch_curves(
    make_config: Callable[..., Any], small_data: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    cfg = make_config([*LEARN, "training.epochs=3", "training.early_stopping_patience=3"])
    result = finetune(cfg, small_data, tmp_path / "out")

    (run,) = training_runs(cfg)
    assert run.info.run_id == result.mlflow_run_id
    assert TrainingResult.from_json(tmp_path / "out" / TRAINING_JSON).mlflow_run_id == run.info.run_id
    assert run.info.status == "FINISHED" and run.data.tags["refinery.step"] == "finetune"
    params = run.data.params
    assert params["training.learning_rate"] == "0.005" and params["training.epochs"] == "3.0"
    assert params["training.lora.enabled"] == "False" and params["training.scheduler"] == "linear"
    assert params["model.max_length"] == "32" and params["data.labels"] == "negative,positive"
    assert params["precision"] == "fp32"
    assert params["model.pooling"] == "auto" and params["pooling"] == "cls"  # the tiny base has no 1_Pooling

    client = MlflowClient(tracking_uri=cfg.registry.tracking_uri)
    steps = [int(h["step"]) for h in result.history]
    assert steps == [4, 8, 12]
    for metric, key in [
        ("validation_macro_f1", "validation_macro_f1"),
        ("validation_loss", "validation_loss"),
        ("validation_accuracy", "validation_accuracy"),
        ("train_loss", "train_loss"),
        ("learning_rate", "learning_rate"),
    ]:
        curve = sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)
        assert [m.step for m in curve] == steps, metric
        assert [m.value for m in curve] == pytest.approx([h[key] for h in result.history]), metric
    final = run.data.metrics
    assert final["final_validation_macro_f1"] == pytest.approx(result.best_validation_macro_f1)
    assert final["final_trainable_parameters"] == result.techniques.trainable_parameters  # type: ignore[union-attr]
    assert final["final_global_steps"] == 12.0


def test_tracking_off_opens_no_mlflow_run(
    make_config: Callable[..., Any], small_data: Path, tmp_path: Path
) -> None:
    cfg = make_config([*LEARN, "training.max_steps=2", "training.tracking=false"])
    result = finetune(cfg, small_data, tmp_path / "out")
    assert result.mlflow_run_id is None and result.global_steps == 2
    assert training_runs(cfg) == []
