"""Serving a classifier exported by :mod:`refinery.packaging.onnx_export` with ONNX Runtime.

:class:`OnnxClassifier` answers the way :class:`refinery.modeling.Classifier` does (same labels, same
batching through :func:`refinery.modeling.predict_in_batches`, same :class:`~refinery.modeling.Prediction`
rows), from the int8 graph ``model.int8.onnx`` beside the model's ``config.json`` and tokenizer files.

Nothing here imports torch, at import or at run time, so an ONNX serving process never pays for it.
That rules out transformers too: importing its ``AutoTokenizer`` or ``AutoConfig`` imports torch
whenever torch is installed (transformers 5). The tokenizer is therefore the model's own
``tokenizer.json`` run by the ``tokenizers`` library, the same Rust tokenizer transformers' fast
tokenizers wrap, with the padding and truncation transformers would set; ``config.json`` and
``tokenizer_config.json`` are read as JSON. onnxruntime and tokenizers are imported when a model is
loaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from refinery.modeling import (
    ModelLoadError,
    Prediction,
    effective_max_length,
    labels_from_config,
    predict_in_batches,
    predictions_from_proba,
)

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Encoding, Tokenizer

logger = logging.getLogger(__name__)

ONNX_FILE = "model.int8.onnx"  # written by refinery.packaging.onnx_export beside config.json
TOKENIZER_FILE = "tokenizer.json"
LOGITS = "logits"
# The graph's inputs that the tokenizer can fill, by the name of the Encoding attribute holding them.
_ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class OnnxClassifier:
    """An exported sequence classifier in ONNX Runtime with its tokenizer, ready for batched inference.

    Build it with :func:`load_onnx_classifier`.
    """

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        tokenizer: Tokenizer,
        labels: tuple[str, ...],
        max_length: int,
        model_dir: Path,
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._labels = labels
        self._input_names = tuple(i.name for i in session.get_inputs())
        self.max_length = max_length
        self.model_dir = model_dir

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names in class-index order (the columns of :meth:`predict_proba`)."""
        return self._labels

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
        return predict_in_batches(texts, batch_size, len(self._labels), self._proba_batch)

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[Prediction]:
        """The most probable label and all label probabilities for each text, in input order."""
        return predictions_from_proba(self.predict_proba(texts, batch_size=batch_size), self._labels)

    def _proba_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        feeds = {name: _encoding_array(encodings, name) for name in self._input_names}
        (logits,) = self._session.run([LOGITS], feeds)
        return softmax(np.asarray(logits))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[n, k]`` logits, as float32 rows summing to 1."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def _encoding_array(encodings: list[Encoding], name: str) -> np.ndarray:
    field = _ENCODING_FIELDS[name]
    return np.array([getattr(e, field) for e in encodings], dtype=np.int64)


def load_onnx_classifier(model_dir: Path, max_length: int, threads: int | None = None) -> OnnxClassifier:
    """Load the int8 ONNX graph in ``model_dir`` (:data:`ONNX_FILE`) with its tokenizer and labels.

    Args:
        model_dir: Directory holding :data:`ONNX_FILE`, ``config.json`` (``id2label``) and the
            tokenizer files (``tokenizer.json``, ``tokenizer_config.json``).
        max_length: Texts are truncated to this many tokens (capped at the model's position limit).
        threads: ONNX Runtime's intra-op threads; default: ONNX Runtime's own choice (all cores).

    Returns:
        An :class:`OnnxClassifier` running on ONNX Runtime's CPU execution provider.

    Raises:
        ModelLoadError: A file is missing or unreadable, or the graph's inputs and outputs are not a
            classifier's; the message names the file.
        ValueError: ``threads`` is given and not positive.
    """
    import onnxruntime

    model_dir = Path(model_dir)
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    path = model_dir / ONNX_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"{path} not found: export the model with refinery.packaging.onnx_export.export_int8"
        )
    config = _read_json(model_dir / "config.json", required=True)
    tokenizer_config = _read_json(model_dir / "tokenizer_config.json", required=False)

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise ModelLoadError(f"cannot load {path} in ONNX Runtime: {exc}") from exc
    unknown = [i.name for i in session.get_inputs() if i.name not in _ENCODING_FIELDS]
    if unknown:
        raise ModelLoadError(f"{path}: the graph takes inputs {unknown} the tokenizer does not produce")
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if LOGITS not in outputs:
        raise ModelLoadError(f"{path}: the graph has no {LOGITS!r} output (outputs: {sorted(outputs)})")

    width = outputs[LOGITS][-1]
    num_labels = width if isinstance(width, int) else len(config.get("id2label") or {})
    # transformers names the classes LABEL_<i> when config.json has no id2label.
    id2label = config.get("id2label") or {i: f"LABEL_{i}" for i in range(num_labels)}
    labels = labels_from_config(id2label, num_labels, model_dir)

    usable = effective_max_length(
        max_length,
        SimpleNamespace(max_position_embeddings=config.get("max_position_embeddings")),
        SimpleNamespace(model_max_length=tokenizer_config.get("model_max_length")),
    )
    if usable < max_length:
        logger.info("max_length %d exceeds what %s accepts; using %d", max_length, model_dir, usable)
    tokenizer = _load_tokenizer(model_dir, tokenizer_config, usable)
    return OnnxClassifier(session, tokenizer, labels, usable, model_dir)


def _read_json(path: Path, required: bool) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise ModelLoadError(f"{path} not found")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data


def _load_tokenizer(model_dir: Path, tokenizer_config: dict[str, Any], max_length: int) -> Tokenizer:
    """The model's ``tokenizer.json`` padding to the longest text of a batch and truncating at
    ``max_length``, on the sides and with the pad token ``tokenizer_config.json`` names (what a
    transformers fast tokenizer called with ``padding=True, truncation=True`` does)."""
    from tokenizers import Tokenizer

    path = model_dir / TOKENIZER_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} not found: ONNX serving needs the fast tokenizer's {TOKENIZER_FILE}")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
        raise ModelLoadError(f"cannot load {path}: {exc}") from exc
    pad_token = tokenizer_config.get("pad_token")
    if isinstance(pad_token, dict):  # an AddedToken written out in full
        pad_token = pad_token.get("content")
    if pad_token is None and tokenizer.padding is not None:
        pad_token = tokenizer.padding.get("pad_token")
    pad_id = tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
    if pad_id is None:
        raise ModelLoadError(f"{model_dir}: the tokenizer has no pad token ({pad_token!r}) in its vocabulary")
    # tokenizer.json may carry padding to a fixed length and a truncation of its own (sentence-
    # transformers saves both); both are replaced by per-batch padding and the serving max_length.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.enable_padding(
        direction=str(tokenizer_config.get("padding_side", "right")), pad_id=pad_id, pad_token=pad_token
    )
    tokenizer.enable_truncation(max_length, direction=str(tokenizer_config.get("truncation_side", "right")))
    return tokenizer
