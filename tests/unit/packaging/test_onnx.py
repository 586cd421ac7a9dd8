"""The ONNX Runtime int8 path: export_int8, OnnxClassifier against torch's Classifier, check_agreement,
and the broken inputs (no graph, a bad model dir, an export failing half-way)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.conftest import LABELS

from refinery.errors import RefineryError
from refinery.modeling import Classifier, ModelLoadError, Prediction, load_classifier
from refinery.packaging import onnx_export
from refinery.packaging.onnx_export import AgreementResult, OnnxExportError, check_agreement, export_int8
from refinery.pooling import POOLING_FIELD
from refinery.serving.onnx import ONNX_FILE, OnnxClassifier, load_onnx_classifier

MAX_LENGTH = 64
# Distinct lengths, so that reordering the input does not change which texts share a batch.
TEXTS = [
    "Great battery, I love it.",
    "bad",
    "The screen cracked after two days and support never answered my emails about the replacement.",
    "",
    "ok I guess",
    "Terrible sound. Returned it!",
    "works well for the price",
    "Ünïcödé façade — naïve café ☃ 中文",
    "word " * 300,
]
# int8 against fp32 on the briefly trained tiny model: the largest difference of a probability measured
# here was 1.9e-3 (the 200 held-out reviews and TEXTS), and 1.2e-3 between a text scored alone and in a
# batch (activations are quantized per batch, so a text's neighbours move its scores slightly).
PROB_ATOL = 1e-2
BATCH_ATOL = 5e-3


def train_briefly(tiny_model_dir: Path, out_dir: Path, demo_df: pd.DataFrame, steps: int = 40) -> Path:
    """The tiny model trained a few steps on the demo reviews, so that its predictions depend on the
    text (the untrained one gives every text the same class, which no agreement check can tell apart)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    train = demo_df.iloc[:400]
    targets = torch.tensor([LABELS.index(label) for label in train["label"]])
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, len(train), (32,))
        enc = tokenizer(
            [train["text"].iloc[int(i)] for i in rows],
            padding=True,
            truncation=True,
            max_length=MAX_LENGTH,
            return_tensors="pt",
        )
        model(**enc, labels=targets[rows]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    shutil.copytree(tiny_model_dir, out_dir)
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: Path, demo_df: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_briefly(tiny_model_dir, tmp_path_factory.mktemp("trained") / "model", demo_df)


@pytest.fixture(scope="module")
def export_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding nothing but the exported graph."""
    out = tmp_path_factory.mktemp("onnx-export")
    export_int8(model_dir, out, MAX_LENGTH)
    return out


@pytest.fixture(scope="module")
def served_dir(model_dir: Path, export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model folder as packaging ships it for ONNX serving: config, tokenizer and the graph."""
    served = tmp_path_factory.mktemp("onnx-served") / "model"
    shutil.copytree(model_dir, served)
    shutil.copy2(export_dir / ONNX_FILE, served / ONNX_FILE)
    return served


@pytest.fixture(scope="module")
def onnx_classifier(served_dir: Path) -> OnnxClassifier:
    return load_onnx_classifier(served_dir, MAX_LENGTH, threads=2)


@pytest.fixture(scope="module")
def torch_classifier(model_dir: Path) -> Classifier:
    return load_classifier(model_dir, max_length=MAX_LENGTH, device="cpu")


@pytest.fixture(scope="module")
def labelled(demo_df: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Reviews the model was not trained on, with their class indices."""
    held_out = demo_df.iloc[400:]
    return list(held_out["text"]), np.array([LABELS.index(label) for label in held_out["label"]])


# --- export -----------------------------------------------------------------------------------------


def test_export_writes_one_int8_graph_with_dynamic_axes(export_dir: Path) -> None:
    import onnx

    assert sorted(p.name for p in export_dir.iterdir()) == [ONNX_FILE]  # no staging left behind
    graph = onnx.load(str(export_dir / ONNX_FILE)).graph
    shapes = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert shapes == {name: ["batch", "sequence"] for name in onnx_export.INPUT_NAMES}
    assert [o.name for o in graph.output] == ["logits"]
    ops = {node.op_type for node in graph.node}
    assert {
        "MatMulInteger",
        "DynamicQuantizeLinear",
    } <= ops  # int8 weights, activations quantized at run time
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)


def test_export_replaces_an_existing_graph(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / ONNX_FILE).write_bytes(b"an older export")
    path = export_int8(tiny_model_dir, tmp_path, MAX_LENGTH)
    assert path == tmp_path / ONNX_FILE
    assert path.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == [ONNX_FILE]


# --- OnnxClassifier against torch ---------------------------------------------------------------------


def test_int8_probabilities_are_close_to_torch(
    onnx_classifier: OnnxClassifier, torch_classifier: Classifier, labelled: tuple[list[str], np.ndarray]
) -> None:
    texts, y_true = labelled
    texts = [*texts, *TEXTS]
    ours = onnx_classifier.predict_proba(texts, batch_size=32)
    reference = torch_classifier.predict_proba(texts, batch_size=32)
    assert ours.shape == reference.shape
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(ours, reference, atol=PROB_ATOL)
    result = check_agreement(
        reference[: len(y_true)], ours[: len(y_true)], y_true, min_agreement=0.98, max_macro_f1_drop=0.02
    )
    assert result.passed, result.failed_rules


def test_labels_and_max_length_match_the_torch_classifier(
    onnx_classifier: OnnxClassifier, torch_classifier: Classifier, served_dir: Path
) -> None:
    assert onnx_classifier.labels == torch_classifier.labels == ("negative", "positive")
    assert onnx_classifier.max_length == torch_classifier.max_length == MAX_LENGTH
    assert onnx_classifier.model_dir == served_dir
    # Capped at the model's 128 positions, as load_classifier caps it.
    assert load_onnx_classifier(served_dir, 4096).max_length == 128


def test_tokenizer_matches_transformers(onnx_classifier: OnnxClassifier, served_dir: Path) -> None:
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(served_dir)(
        TEXTS, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="np"
    )
    encodings = onnx_classifier._tokenizer.encode_batch(TEXTS)
    for name, field in (
        ("input_ids", "ids"),
        ("attention_mask", "attention_mask"),
        ("token_type_ids", "type_ids"),
    ):
        np.testing.assert_array_equal(np.array([getattr(e, field) for e in encodings]), expected[name])


def test_rows_come_back_in_input_order(onnx_classifier: OnnxClassifier) -> None:
    batched = onnx_classifier.predict_proba(TEXTS, batch_size=3)
    one_by_one = np.vstack([onnx_classifier.predict_proba([t]) for t in TEXTS])
    np.testing.assert_allclose(batched, one_by_one, atol=BATCH_ATOL)
    assert (batched.argmax(axis=1) == one_by_one.argmax(axis=1)).all()
    # Reversed input, same batches (lengths are distinct): the same rows, reversed.
    np.testing.assert_allclose(
        onnx_classifier.predict_proba(TEXTS[::-1], batch_size=3)[::-1], batched, atol=1e-6
    )


def test_predict_returns_argmax_label_and_all_scores(onnx_classifier: OnnxClassifier) -> None:
    probs = onnx_classifier.predict_proba(TEXTS)
    predictions = onnx_classifier.predict(TEXTS)
    assert len(predictions) == len(TEXTS)
    for prediction, row in zip(predictions, probs, strict=True):
        assert isinstance(prediction, Prediction)
        assert prediction.label == onnx_classifier.labels[int(row.argmax())]
        assert prediction.scores == pytest.approx(
            dict(zip(onnx_classifier.labels, row.tolist(), strict=True))
        )


def test_empty_input_gives_empty_output(onnx_classifier: OnnxClassifier) -> None:
    assert onnx_classifier.predict_proba([]).shape == (0, 2)
    assert onnx_classifier.predict([]) == []


@pytest.mark.parametrize(
    ("texts", "message"),
    [("just one string", "single string"), (["fine", None], r"texts\[1\] is NoneType"), (["a", 3], "int")],
)
def test_non_text_input_is_rejected(onnx_classifier: OnnxClassifier, texts: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        onnx_classifier.predict_proba(texts)  # type: ignore[arg-type]


def test_batch_size_and_threads_must_be_positive(onnx_classifier: OnnxClassifier, served_dir: Path) -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        onnx_classifier.predict(["fine"], batch_size=0)
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        load_onnx_classifier(served_dir, MAX_LENGTH, threads=0)


def test_serving_never_imports_torch(served_dir: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from refinery.serving.onnx import load_onnx_classifier\n"
        f"clf = load_onnx_classifier(Path({str(served_dir)!r}), 64, threads=1)\n"
        "assert clf.predict(['fine', 'bad'])[0].label in clf.labels\n"
        "heavy = {'torch', 'transformers', 'sklearn'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- loading errors -----------------------------------------------------------------------------------


def test_missing_graph_is_named(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=rf"{tiny_model_dir}/model\.int8\.onnx not found") as info:
        load_onnx_classifier(tiny_model_dir, MAX_LENGTH)
    assert isinstance(info.value, RefineryError)


def test_corrupt_graph_is_named(served_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(served_dir, broken)
    (broken / ONNX_FILE).write_bytes(b"not an onnx graph")
    with pytest.raises(ModelLoadError, match=r"cannot load .*broken/model\.int8\.onnx in ONNX Runtime"):
        load_onnx_classifier(broken, MAX_LENGTH)


def test_missing_tokenizer_is_named(served_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "no-tokenizer"
    shutil.copytree(served_dir, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"no-tokenizer/tokenizer\.json not found"):
        load_onnx_classifier(broken, MAX_LENGTH)


# --- export errors ------------------------------------------------------------------------------------


def test_export_of_a_missing_dir_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(
        OnnxExportError, match=r"cannot export .*no-such-model to ONNX: model directory not found"
    ):
        export_int8(tmp_path / "no-such-model", out, MAX_LENGTH)
    assert not out.exists()


def test_export_of_corrupt_weights_names_the_dir_and_writes_nothing(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OnnxExportError, match=r"cannot export .*broken-model to ONNX") as info:
        export_int8(broken, out, MAX_LENGTH)
    assert isinstance(info.value, RefineryError)
    assert list(out.iterdir()) == []


def test_export_failing_half_way_leaves_the_old_graph_alone(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_quantizer(fp32: Path, int8: Path) -> None:
        int8.write_bytes(b"half written")
        raise RuntimeError("quantizer crashed")

    monkeypatch.setattr(onnx_export, "_quantize", broken_quantizer)
    (tmp_path / ONNX_FILE).write_bytes(b"the previous export")
    with pytest.raises(OnnxExportError, match=r"cannot export .* to ONNX: RuntimeError: quantizer crashed"):
        export_int8(tiny_model_dir, tmp_path, MAX_LENGTH)
    assert sorted(p.name for p in tmp_path.iterdir()) == [ONNX_FILE]
    assert (tmp_path / ONNX_FILE).read_bytes() == b"the previous export"


# --- check_agreement ----------------------------------------------------------------------------------


def test_agreement_of_equal_predictions_passes() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], dtype=np.float32)
    result = check_agreement(probs, probs.copy(), [0, 1, 1, 1], min_agreement=1.0, max_macro_f1_drop=0.0)
    assert result == AgreementResult(
        rows=4,
        agreement=1.0,
        reference_macro_f1=result.reference_macro_f1,
        candidate_macro_f1=result.reference_macro_f1,
        macro_f1_drop=0.0,
        passed=True,
        failed_rules=(),
    )
    assert result.reference_macro_f1 == pytest.approx(0.7333, abs=1e-4)
    assert result.to_dict()["failed_rules"] == []


def test_agreement_names_each_failed_rule_with_its_figures() -> None:
    reference = np.eye(2)[[0, 0, 1, 1, 0, 1, 0, 1, 0, 1]]
    candidate = reference.copy()
    candidate[:2] = [0.0, 1.0]  # two of ten rows flipped, both right in the reference
    y_true = reference.argmax(axis=1)
    result = check_agreement(reference, candidate, y_true, min_agreement=0.9, max_macro_f1_drop=0.1)
    assert not result.passed
    assert result.agreement == pytest.approx(0.8)
    assert result.macro_f1_drop == pytest.approx(1.0 - result.candidate_macro_f1)
    assert result.failed_rules == (
        "agreement 0.800 < min_agreement 0.900",
        f"macro_f1_drop {result.macro_f1_drop:.3f} > max_macro_f1_drop 0.100 "
        f"(reference 1.000, candidate {result.candidate_macro_f1:.3f})",
    )
    # At the limits exactly, both rules hold.
    assert check_agreement(reference, candidate, y_true, 0.8, result.macro_f1_drop).passed


@pytest.mark.parametrize(
    ("reference", "candidate", "y_true", "message"),
    [
        (
            np.zeros((3, 2)),
            np.zeros((4, 2)),
            [0, 1, 0],
            r"reference_probs has shape \(3, 2\) but candidate_probs has \(4, 2\)",
        ),
        (np.zeros(3), np.zeros(3), [0, 1, 0], "must be 2-D"),
        (np.zeros((0, 2)), np.zeros((0, 2)), [], "nothing to compare"),
        (
            np.zeros((3, 2)),
            np.zeros((3, 2)),
            [0, 1],
            r"y_true has shape \(2,\) but the probabilities have 3 rows",
        ),
        (np.zeros((3, 2)), np.zeros((3, 2)), [0, 1, 2], r"class indices 0..1"),
        (np.zeros((3, 2)), np.zeros((3, 2)), [0.0, 1.0, 0.5], r"class indices 0..1"),
    ],
)
def test_agreement_rejects_mismatched_inputs(
    reference: np.ndarray, candidate: np.ndarray, y_true: list, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_agreement(reference, candidate, y_true, min_agreement=0.9, max_macro_f1_drop=0.1)


def test_agreement_rejects_thresholds_outside_0_1() -> None:
    probs = np.eye(2)
    with pytest.raises(ValueError, match=r"min_agreement must be in \[0, 1\], got 1.5"):
        check_agreement(probs, probs, [0, 1], min_agreement=1.5, max_macro_f1_drop=0.1)


def test_a_damaged_export_fails_the_agreement_check(
    served_dir: Path, torch_classifier: Classifier, labelled: tuple[list[str], np.ndarray], tmp_path: Path
) -> None:
    import onnx
    from onnx import numpy_helper

    texts, y_true = labelled
    reference = torch_classifier.predict_proba(texts)
    minority = int(np.bincount(reference.argmax(axis=1), minlength=2).argmin())

    # Overwrite the classifier's bias in the graph so that every text lands in the class torch
    # predicts least: the export's predictions disagree on at least half the texts.
    damaged = tmp_path / "damaged"
    shutil.copytree(served_dir, damaged)
    model = onnx.load(str(damaged / ONNX_FILE))
    (bias,) = [t for t in model.graph.initializer if t.name.endswith("classifier.bias")]
    values = np.zeros(numpy_helper.to_array(bias).shape, dtype=np.float32)
    values[minority] = 50.0
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(damaged / ONNX_FILE))

    candidate = load_onnx_classifier(damaged, MAX_LENGTH).predict_proba(texts)
    assert (candidate.argmax(axis=1) == minority).all()
    result = check_agreement(reference, candidate, y_true, min_agreement=0.99, max_macro_f1_drop=0.01)
    assert not result.passed
    assert [rule.split()[0] for rule in result.failed_rules] == ["agreement", "macro_f1_drop"]
    assert result.agreement <= 0.5
    assert result.candidate_macro_f1 < result.reference_macro_f1 - 0.2


# --- the model as torch serves it: saved pooling, LoRA adapters -------------------------------------------


def mean_pooled(model_dir: Path, out_dir: Path) -> Path:
    """A copy of the model that pools by mean (``refinery_pooling: mean`` in its config.json)."""
    shutil.copytree(model_dir, out_dir)
    config = json.loads((out_dir / "config.json").read_text())
    (out_dir / "config.json").write_text(json.dumps({**config, POOLING_FIELD: "mean"}))
    return out_dir


def lora_adapter(model_dir: Path, out_dir: Path) -> Path:
    """A LoRA adapter on ``model_dir`` kept apart from its base (``training.lora.merge: false``), with
    non-zero adapter weights so that merging it changes the predictions."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from refinery.training.techniques import save_lora

    torch.manual_seed(1)
    base = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["query", "value"],
        modules_to_save=["classifier"],
        task_type="SEQ_CLS",
    )
    model = get_peft_model(base, lora)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    save_lora(model, out_dir, merge=False)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(model_dir / name, out_dir / name)
    return out_dir


@pytest.mark.parametrize("variant", ["mean_pooling", "lora_adapter"])
def test_export_matches_what_torch_serves(
    variant: str, model_dir: Path, torch_classifier: Classifier, tmp_path: Path
) -> None:
    build = mean_pooled if variant == "mean_pooling" else lora_adapter
    variant_dir = build(model_dir, tmp_path / variant)
    export_int8(variant_dir, variant_dir, MAX_LENGTH)
    reference = load_classifier(variant_dir, max_length=MAX_LENGTH, device="cpu").predict_proba(TEXTS)
    ours = load_onnx_classifier(variant_dir, MAX_LENGTH).predict_proba(TEXTS)
    np.testing.assert_allclose(ours, reference, atol=PROB_ATOL)
    # The variant really serves other probabilities than the plain model, so the match is not trivial.
    assert np.abs(reference - torch_classifier.predict_proba(TEXTS)).max() > 0.01
