"""Loading a fine-tuned classifier and predicting with it; shared by evaluation and serving.

Only safetensors weights are loaded: a model directory holding nothing but pickled weights
(``pytorch_model.bin``) is refused, so loading a model never runs code from the file. torch and
transformers are imported inside the functions that use them, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from refinery.errors import RefineryError
from refinery.results import Record

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
# A LoRA adapter saved apart from its base (refinery.training.techniques.save_lora, merge false).
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class ModelLoadError(RefineryError):
    """A model directory is missing, holds no safetensors weights, or cannot be loaded."""


@dataclass(frozen=True)
class Prediction(Record):
    """One prediction: the most probable label and the probability of every label."""

    label: str
    scores: dict[str, float]


def has_safetensors(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds safetensors weights (one file or a sharded index)."""
    return any((Path(model_dir) / name).is_file() for name in SAFETENSORS_FILES)


def labels_from_config(id2label: dict[Any, str], num_labels: int, source: Path) -> tuple[str, ...]:
    """Class names in class-index order from a transformers ``id2label`` mapping.

    Raises:
        ModelLoadError: The mapping does not name exactly the classes ``0 .. num_labels-1``.
    """
    by_index = {int(k): str(v) for k, v in id2label.items()}
    if sorted(by_index) != list(range(num_labels)):
        raise ModelLoadError(
            f"{source}/config.json: id2label {by_index} does not name classes 0..{num_labels - 1}"
        )
    return tuple(by_index[i] for i in range(num_labels))


def effective_max_length(requested: int, model_config: Any, tokenizer: Any) -> int:
    """``requested`` capped at what the model and tokenizer accept (position embeddings, model_max_length)."""
    limits = [requested]
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    # Tokenizers without a declared limit report a huge sentinel (int(1e30)); ignore it.
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < 1_000_000:
        limits.append(declared)
    return min(limits)


def predict_in_batches(
    texts: Sequence[str], batch_size: int, width: int, run_batch: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """Run ``run_batch`` over ``texts`` batch by batch and gather its rows in input order.

    Texts are sorted by length (longest first) before they are cut into batches, so a batch of short
    texts is not padded to the longest text of the whole input. Every runtime (torch, ONNX Runtime)
    batches through this one function.

    Args:
        texts: The texts to run.
        batch_size: How many texts one call of ``run_batch`` gets.
        width: The number of columns ``run_batch`` returns per text (e.g. the number of labels).
        run_batch: Maps a list of texts to an array ``[len(list), width]`` (e.g. class probabilities).

    Returns:
        float32 array of shape ``[len(texts), width]``, row ``i`` belonging to ``texts[i]``.

    Raises:
        TypeError: ``texts`` is a single string, or an element of it is not a string.
        ValueError: ``batch_size`` is not positive, or ``run_batch`` returned another shape.
    """
    if isinstance(texts, str):
        raise TypeError("expected a sequence of texts, got a single string")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
    rows = np.empty((len(texts), width), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        out = np.asarray(run_batch([texts[i] for i in idx]))
        if out.shape != (len(idx), width):
            raise ValueError(
                f"a batch of {len(idx)} texts gave an array {out.shape}, expected {(len(idx), width)}"
            )
        rows[idx] = out
    return rows


def predictions_from_proba(probs: np.ndarray, labels: Sequence[str]) -> list[Prediction]:
    """One :class:`Prediction` per row of ``probs`` (columns in the order of ``labels``): the most
    probable label and every label's probability."""
    best = probs.argmax(axis=1) if len(probs) else np.empty(0, dtype=int)
    return [
        Prediction(
            label=labels[int(b)],
            scores={label: float(p) for label, p in zip(labels, row, strict=True)},
        )
        for b, row in zip(best, probs, strict=True)
    ]


class Classifier:
    """A sequence-classification model with its tokenizer, ready for batched inference."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        labels: tuple[str, ...],
        max_length: int,
        model_dir: Path,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._labels = labels
        self.max_length = max_length
        self.model_dir = model_dir

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names in class-index order (the columns of :meth:`predict_proba`)."""
        return self._labels

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        return self._model.device

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities for each text.

        Texts are sorted by length and padded per batch, so a batch of short texts is not padded to
        the longest text of the whole input; rows come back in input order.

        Args:
            texts: The texts to classify.
            batch_size: How many texts go through the model at once.

        Returns:
            float32 array of shape ``[len(texts), len(labels)]`` whose rows sum to 1.

        Raises:
            TypeError: An element of ``texts`` is not a string.
            ValueError: ``batch_size`` is not positive.
        """
        return self._run(texts, batch_size, embed=False)[0]

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities and sentence embeddings of each text, from one pass through the model.

        The embedding is the mean of the real tokens' last hidden states: the model's own view of the
        text, which drift monitoring compares between the reference and a served window.

        Returns:
            ``(probabilities, embeddings)``: float32 arrays ``[len(texts), len(labels)]`` and
            ``[len(texts), hidden_size]``, rows in input order.

        Raises:
            TypeError: An element of ``texts`` is not a string.
            ValueError: ``batch_size`` is not positive.
        """
        probs, embeddings = self._run(texts, batch_size, embed=True)
        assert embeddings is not None
        return probs, embeddings

    def _run(
        self, texts: Sequence[str], batch_size: int, embed: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        num_labels = len(self._labels)
        hidden_size = int(getattr(self._model.config, "hidden_size", 0)) if embed else 0

        def run_batch(batch: list[str]) -> np.ndarray:
            enc = self._tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self._model.device)
            out = self._model(**enc, output_hidden_states=embed)
            probs = torch.softmax(out.logits.float(), dim=-1)
            if not embed:
                return probs.cpu().numpy()
            hidden = out.hidden_states[-1].float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            # One array per batch for the shared batching helper: probabilities, then the embedding.
            return torch.cat([probs, pooled], dim=1).cpu().numpy()

        with torch.inference_mode():
            rows = predict_in_batches(texts, batch_size, num_labels + hidden_size, run_batch)
        if not embed:
            return rows, None
        return np.ascontiguousarray(rows[:, :num_labels]), np.ascontiguousarray(rows[:, num_labels:])

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[Prediction]:
        """The most probable label and all label probabilities for each text, in input order."""
        return predictions_from_proba(self.predict_proba(texts, batch_size=batch_size), self._labels)


def load_model_and_tokenizer(model_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a fine-tuned classifier saved with ``save_pretrained`` (safetensors) and its tokenizer, with
    the pooling it was trained with (:func:`refinery.pooling.apply_saved_pooling`) and a LoRA adapter
    merged onto its base: the model every runtime (torch serving, ONNX export) starts from.

    Args:
        model_dir: Directory holding ``config.json``, ``model.safetensors`` and the tokenizer files, or
            a LoRA adapter (``adapter_config.json``, ``adapter_model.safetensors``) whose base model is
            still where the adapter's config names it.

    Returns:
        ``(model, tokenizer)``, the model on the CPU in eval mode.

    Raises:
        ModelLoadError: The directory is missing, has no safetensors weights, or cannot be loaded.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refinery.pooling import apply_saved_pooling

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory not found: {model_dir}")
    adapter = (model_dir / ADAPTER_CONFIG).is_file()
    if not adapter and not has_safetensors(model_dir):
        raise ModelLoadError(
            f"{model_dir} holds no model.safetensors; only safetensors weights are loaded "
            "(re-save the model with save_pretrained)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if adapter:
            # A LoRA adapter kept apart (training.lora.merge false): merged onto its base model here.
            model = load_lora_classifier(model_dir)
        else:
            model = apply_saved_pooling(
                AutoModelForSequenceClassification.from_pretrained(
                    model_dir, use_safetensors=True, local_files_only=True
                )
            )
    except Exception as exc:  # transformers/safetensors raise many unrelated types for a broken dir
        raise ModelLoadError(f"cannot load the model in {model_dir}: {exc}") from exc
    model.eval()
    return model, tokenizer


def is_adapter_dir(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds a LoRA adapter saved without merging
    (:func:`refinery.training.techniques.save_lora`)."""
    return (Path(model_dir) / ADAPTER_CONFIG).is_file() and (Path(model_dir) / ADAPTER_WEIGHTS).is_file()


def load_lora_classifier(model_dir: Path) -> Any:
    """Load a LoRA adapter saved without merging onto its base model, with the pooling it was trained
    with, and merge it.

    The base model is the one ``adapter_config.json`` names; it must still be there, as safetensors.

    Returns:
        A plain transformers sequence-classification model in eval mode.

    Raises:
        ModelLoadError: ``model_dir`` holds no adapter, or the base model cannot be loaded.
    """
    from peft import PeftConfig, PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from refinery.pooling import apply_saved_pooling

    model_dir = Path(model_dir)
    if not is_adapter_dir(model_dir):
        raise ModelLoadError(f"{model_dir} holds no LoRA adapter ({ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    adapter = PeftConfig.from_pretrained(str(model_dir))
    base = adapter.base_model_name_or_path
    try:
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            config=config,
            use_safetensors=True,
            local_files_only=True,
            # The base's own head may have another size; the adapter brings the trained one.
            ignore_mismatched_sizes=True,
        )
    except Exception as exc:  # transformers raises OSError, ValueError, ... for a missing or bad base
        raise ModelLoadError(
            f"cannot load the base model {base} of the adapter in {model_dir}: {exc}"
        ) from exc
    apply_saved_pooling(model)
    merged = PeftModel.from_pretrained(model, str(model_dir)).merge_and_unload()
    merged.eval()
    return merged


def load_classifier(model_dir: Path, max_length: int = 128, device: str | None = None) -> Classifier:
    """Load a fine-tuned classifier saved with ``save_pretrained`` (safetensors) plus its tokenizer.

    Args:
        model_dir: Directory holding ``config.json``, ``model.safetensors`` and the tokenizer files, or
            a LoRA adapter (``adapter_config.json``, ``adapter_model.safetensors``) whose base model is
            still where the adapter's config names it (see :func:`load_model_and_tokenizer`).
        max_length: Texts are truncated to this many tokens (capped at the model's position limit).
        device: torch device; default CUDA when available, else CPU.

    Returns:
        A :class:`Classifier` in eval mode.

    Raises:
        ModelLoadError: The directory is missing, has no safetensors weights, or cannot be loaded.
    """
    import torch

    model_dir = Path(model_dir)
    loaded, tokenizer = load_model_and_tokenizer(model_dir)
    model: Any = loaded  # transformers types config fields as optional and .to() narrowly
    labels = labels_from_config(model.config.id2label, model.config.num_labels, model_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    model.eval()
    usable = effective_max_length(max_length, model.config, tokenizer)
    if usable < max_length:
        logger.info("max_length %d exceeds what %s accepts; using %d", max_length, model_dir, usable)
    return Classifier(model, tokenizer, labels, usable, model_dir)
