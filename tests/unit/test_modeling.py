"""load_classifier and Classifier: safetensors-only loading, probabilities, input order, bad model dirs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refinery.errors import RefineryError
from refinery.modeling import Classifier, ModelLoadError, Prediction, load_classifier

TEXTS = [
    "Great battery, I love it.",
    "bad",
    "The screen cracked after two days and support never answered my emails about the replacement.",
    "",
    "ok I guess",
    "Terrible sound. Returned it!",
    "works well for the price",
]


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path) -> Classifier:
    return load_classifier(tiny_model_dir, max_length=64)


def test_labels_come_from_id2label_in_class_order(classifier: Classifier) -> None:
    assert classifier.labels == ("negative", "positive")


def test_predict_proba_rows_are_distributions(classifier: Classifier) -> None:
    probs = classifier.predict_proba(TEXTS, batch_size=3)
    assert probs.shape == (len(TEXTS), 2)
    assert probs.dtype == np.float32
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_predict_proba_keeps_input_order_whatever_the_batching(classifier: Classifier) -> None:
    batched = classifier.predict_proba(TEXTS, batch_size=3)
    one_by_one = np.vstack([classifier.predict_proba([t]) for t in TEXTS])
    # Padding inside a batch is masked out, so each row matches the text scored alone.
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    reversed_probs = classifier.predict_proba(TEXTS[::-1], batch_size=2)
    np.testing.assert_allclose(reversed_probs[::-1], batched, atol=1e-5)


def test_matches_the_saved_model_loaded_directly(classifier: Classifier, tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    with torch.inference_mode():
        logits = model(**tokenizer(TEXTS[0], return_tensors="pt")).logits
    np.testing.assert_allclose(
        classifier.predict_proba([TEXTS[0]])[0], torch.softmax(logits, -1)[0].numpy(), atol=1e-6
    )


def test_predict_returns_argmax_label_and_all_scores(classifier: Classifier) -> None:
    probs = classifier.predict_proba(TEXTS)
    predictions = classifier.predict(TEXTS)
    assert len(predictions) == len(TEXTS)
    for prediction, row in zip(predictions, probs, strict=True):
        assert isinstance(prediction, Prediction)
        assert set(prediction.scores) == {"negative", "positive"}
        assert prediction.label == classifier.labels[int(row.argmax())]
        assert prediction.scores[prediction.label] == pytest.approx(float(row.max()))
        assert prediction.to_dict() == {"label": prediction.label, "scores": prediction.scores}


def test_empty_input_gives_empty_output(classifier: Classifier) -> None:
    assert classifier.predict_proba([]).shape == (0, 2)
    assert classifier.predict([]) == []


def test_texts_longer_than_the_model_are_truncated(tiny_model_dir: Path) -> None:
    # The tiny model has 128 positions; a larger max_length is capped rather than crashing.
    clf = load_classifier(tiny_model_dir, max_length=4096)
    assert clf.max_length == 128
    probs = clf.predict_proba(["word " * 1000])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    ("texts", "message"),
    [("just one string", "single string"), (["fine", None], r"texts\[1\] is NoneType"), (["a", 3], "int")],
)
def test_non_text_input_is_rejected(classifier: Classifier, texts: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        classifier.predict_proba(texts)  # type: ignore[arg-type]


def test_refuses_a_dir_without_safetensors(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled-model"
    shutil.copytree(tiny_model_dir, pickled)
    state = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"pickled-model holds no model\.safetensors") as info:
        load_classifier(pickled)
    assert isinstance(info.value, RefineryError)


def test_missing_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model directory not found: .*no-such-model"):
        load_classifier(tmp_path / "no-such-model")


def test_corrupt_weights_are_reported_with_the_dir(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match=r"cannot load the model in .*broken-model"):
        load_classifier(broken)


def test_importing_stays_cheap() -> None:
    code = (
        "import sys, refinery.modeling, refinery.training.finetune; "
        "heavy = {'torch', 'transformers', 'sklearn'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
