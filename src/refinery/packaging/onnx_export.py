"""Exporting a fine-tuned classifier to ONNX with int8 weights, and checking that it still agrees.

:func:`export_int8` turns the model :func:`refinery.modeling.load_model_and_tokenizer` loads (the
pooling it was trained with, a LoRA adapter merged) into one file, :data:`ONNX_FILE`, that
:func:`refinery.serving.onnx.load_onnx_classifier` serves with ONNX Runtime. :func:`check_agreement`
compares the int8 model's predictions with torch's on labelled texts, so that packaging can refuse an
export that changed the model's decisions. torch, transformers, onnxruntime and scikit-learn are
imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from refinery.atomic import staged_file
from refinery.errors import PackagingError
from refinery.modeling import ModelLoadError, effective_max_length, load_model_and_tokenizer
from refinery.results import Record
from refinery.serving.onnx import LOGITS, ONNX_FILE

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

# Opset 17 has LayerNormalization as one op; every onnxruntime release since 1.14 runs it.
ONNX_OPSET = 17
# The inputs a BERT-style tokenizer produces, in the order the graph takes them.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Texts traced into the graph (two lengths, so the example batch is padded) and the texts of the check
# that the traced graph generalises to other batch sizes and lengths (the longest reaches max_length).
_TRACE_TEXTS = ("a short example", "a longer example text, so that the traced batch holds padding")
_CHECK_TEXTS = ("ok", "a text of a few more words than the shortest one")
# How far the fp32 graph's logits may stray from torch's before the export is refused; the graphs
# exported here agree to about 1e-6 (float rounding only).
_FP32_ATOL = 1e-3


class OnnxExportError(PackagingError):
    """A model could not be exported to ONNX or quantized; the message names the model dir and why."""


def export_int8(model_dir: Path, out_dir: Path, max_length: int) -> Path:
    """Export the classifier in ``model_dir`` to ONNX and quantize its weights to int8.

    The graph takes the tokenizer's ``input_ids``, ``attention_mask`` and (when the model takes them)
    ``token_type_ids``, each ``[batch, sequence]`` with both axes dynamic, and returns ``logits``
    ``[batch, num_labels]``. Before quantizing, the fp32 graph is run on a batch of another size and
    length (up to ``max_length`` tokens) and must reproduce torch's logits. Weights are quantized
    dynamically (``onnxruntime.quantization.quantize_dynamic``: signed int8 weights with one scale per
    output channel, activations quantized at run time), which needs no calibration data.

    The files are written in a scratch folder inside ``out_dir`` and only the finished graph is published
    (:func:`refinery.atomic.staged_file`), so a failed export leaves nothing behind.

    Args:
        model_dir: A model saved with ``save_pretrained`` (safetensors), or a LoRA adapter; see
            :func:`refinery.modeling.load_model_and_tokenizer`.
        out_dir: Where ``model.int8.onnx`` is written (created when missing; an existing file is
            replaced).
        max_length: The longest input, in tokens, the export is checked at (capped at the model's
            position limit); the graph itself takes any length the model does.

    Returns:
        The path of the int8 graph, ``out_dir / ONNX_FILE``.

    Raises:
        OnnxExportError: The model cannot be loaded, exported, checked or quantized.
        ValueError: ``max_length`` is not positive.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    started = time.perf_counter()
    try:
        model, tokenizer = load_model_and_tokenizer(model_dir)
    except ModelLoadError as exc:
        raise OnnxExportError(f"cannot export {model_dir} to ONNX: {exc}") from exc
    names = _input_names(model, tokenizer.model_input_names, model_dir)
    usable = effective_max_length(max_length, model.config, tokenizer)

    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ONNX_FILE
    try:
        # The fp32 graph is scratch; only the int8 graph is published, whole (refinery.atomic).
        with (
            tempfile.TemporaryDirectory(prefix=f".{ONNX_FILE}.", suffix=".tmp", dir=out_dir) as work,
            staged_file(target) as int8,
        ):
            fp32 = Path(work) / "model.fp32.onnx"
            try:
                _export_fp32(model, tokenizer, names, usable, fp32)
                _check_fp32(model, tokenizer, names, usable, fp32, model_dir)
                _quantize(fp32, int8)
            except OnnxExportError:
                raise
            except Exception as exc:  # torch.onnx, onnx and onnxruntime raise many unrelated types
                raise OnnxExportError(
                    f"cannot export {model_dir} to ONNX: {type(exc).__name__}: {exc}"
                ) from exc
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only when empty
        raise
    logger.info(
        "exported %s to %s (%.1f MB) in %.1f s",
        model_dir,
        target,
        target.stat().st_size / 1e6,
        time.perf_counter() - started,
    )
    return target


def _input_names(model: PreTrainedModel, tokenizer_inputs: Sequence[str], model_dir: Path) -> list[str]:
    """The graph's inputs: what the tokenizer produces and the model's forward takes (a mean-pooled
    model's forward included, see :mod:`refinery.pooling`)."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    names = [n for n in INPUT_NAMES if n in tokenizer_inputs and n in accepted]
    if names[:2] != ["input_ids", "attention_mask"]:
        raise OnnxExportError(
            f"cannot export {model_dir} to ONNX: its tokenizer and model share the inputs {names}, "
            "not input_ids and attention_mask"
        )
    return names


def _logits_only(model: PreTrainedModel, names: Sequence[str]) -> Any:
    """``model`` as a module taking the inputs positionally, in the order of ``names``, and returning
    the logits tensor alone (the exporter needs plain tensors in and out)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).logits

    return LogitsOnly().eval()


def _encode(tokenizer: Any, texts: Sequence[str], names: Sequence[str], max_length: int) -> dict[str, Any]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {name: enc[name] for name in names}


def _export_fp32(
    model: PreTrainedModel, tokenizer: Any, names: list[str], max_length: int, path: Path
) -> None:
    import torch

    # The TorchScript exporter (dynamo=False), not the torch.export-based default of torch >= 2.9: on
    # this stack (torch 2.13, transformers 5) both give graphs that match torch to ~1e-8, but the
    # dynamo exporter needs two more packages (onnxscript, onnx-ir), takes ~8x longer (7.6 s against
    # 1.0 s for a 2-layer BERT), and writes the weights to a separate .onnx.data file. The trace's
    # one risk, a Python branch on a traced shape frozen into the graph, is what _check_fp32 catches.
    model.float()  # a model saved in half precision is exported (and quantized) from float32
    encoded = _encode(tokenizer, _TRACE_TEXTS, names, max_length)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    with warnings.catch_warnings(), torch.no_grad():
        # Expected noise of a trace: the exporter's deprecation notice, transformers' shape checks
        # frozen into the trace, the advanced-indexing note (the check below runs the graph).
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*TorchScript-based ONNX")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, message=".*aten::index.*")
        torch.onnx.export(
            _logits_only(model, names),
            tuple(encoded[name] for name in names),
            str(path),
            input_names=names,
            output_names=[LOGITS],
            dynamic_axes={**dynamic, LOGITS: {0: "batch"}},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _check_fp32(
    model: PreTrainedModel, tokenizer: Any, names: list[str], max_length: int, path: Path, model_dir: Path
) -> None:
    """Run the fp32 graph on a batch of another size and length than the traced one, up to
    ``max_length`` tokens, and refuse it unless it reproduces torch's logits."""
    import onnxruntime
    import torch

    texts = [*_CHECK_TEXTS, "word " * max_length]
    encoded = _encode(tokenizer, texts, names, max_length)
    with torch.no_grad():
        expected = _logits_only(model, names)(*(encoded[name] for name in names)).float().numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run([LOGITS], {name: encoded[name].numpy() for name in names})
    worst = float(np.max(np.abs(got - expected)))
    if not np.allclose(got, expected, atol=_FP32_ATOL, rtol=_FP32_ATOL):
        raise OnnxExportError(
            f"cannot export {model_dir} to ONNX: the graph does not reproduce torch's logits on a batch of "
            f"{len(texts)} texts up to {encoded['input_ids'].shape[1]} tokens (max |difference| {worst:.3g})"
        )


def _quantize(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Signed int8 weights (onnxruntime's advice for dynamic quantization on x86-64), one scale per
    # output channel: on all-MiniLM-L6-v2 fine-tuned on SST-2 this halved the probabilities' error
    # against torch (mean |difference| 0.013 against 0.034 with one scale per tensor) at the same size
    # and speed. The quantizer's advice to pre-process the graph is left unheeded: it fails on these
    # graphs (symbolic shape inference) and, without that step, changed nothing.
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=True)


@dataclass(frozen=True)
class AgreementResult(Record):
    """How far a candidate model's predictions (int8 ONNX) stay from a reference's (torch fp32).

    Attributes:
        rows: Number of texts compared.
        agreement: Share of texts whose most probable class is the same in both.
        reference_macro_f1: The reference's macro-F1 against the true labels.
        candidate_macro_f1: The candidate's macro-F1 against the true labels.
        macro_f1_drop: ``reference_macro_f1 - candidate_macro_f1`` (negative when the candidate is better).
        passed: True when no rule failed.
        failed_rules: One line per failed rule naming the rule and the figures, e.g.
            ``"agreement 0.950 < min_agreement 0.990"``.
    """

    rows: int
    agreement: float
    reference_macro_f1: float
    candidate_macro_f1: float
    macro_f1_drop: float
    passed: bool
    failed_rules: tuple[str, ...]


# Macro-F1 values are ratios of small integers; a drop equal to the limit must not fail by a few ulps.
_EPSILON = 1e-9


def check_agreement(
    reference_probs: np.ndarray,
    candidate_probs: np.ndarray,
    y_true: Sequence[int] | np.ndarray,
    min_agreement: float,
    max_macro_f1_drop: float,
) -> AgreementResult:
    """Compare a candidate's class probabilities with a reference's on the same labelled texts.

    Rules: ``agreement >= min_agreement`` (share of rows with the same argmax) and
    ``macro_f1_drop <= max_macro_f1_drop`` (macro-F1 over all ``num_labels`` classes, by
    ``sklearn.metrics.f1_score``).

    Args:
        reference_probs: ``[rows, num_labels]`` probabilities (or scores) of the reference model.
        candidate_probs: The candidate's, same shape, rows for the same texts.
        y_true: The true class index of each row, in ``0 .. num_labels-1``.
        min_agreement: The least share of rows whose predicted class must agree, in [0, 1].
        max_macro_f1_drop: How much lower than the reference's the candidate's macro-F1 may be, in [0, 1].

    Returns:
        An :class:`AgreementResult`; ``passed`` is False with ``failed_rules`` naming each broken rule.

    Raises:
        ValueError: The arrays are not 2-D, differ in shape, are empty, ``y_true`` has another number
            of rows or an index outside the classes, or a threshold is outside [0, 1].
    """
    from sklearn.metrics import f1_score

    reference = np.asarray(reference_probs)
    candidate = np.asarray(candidate_probs)
    truth = np.asarray(y_true)
    if reference.ndim != 2 or candidate.ndim != 2:
        raise ValueError(
            f"reference_probs and candidate_probs must be 2-D [rows, labels], got shapes "
            f"{reference.shape} and {candidate.shape}"
        )
    if reference.shape != candidate.shape:
        raise ValueError(
            f"reference_probs has shape {reference.shape} but candidate_probs has {candidate.shape}"
        )
    rows, num_labels = reference.shape
    if rows == 0 or num_labels == 0:
        raise ValueError(f"nothing to compare: probabilities of shape {reference.shape}")
    if truth.shape != (rows,):
        raise ValueError(f"y_true has shape {truth.shape} but the probabilities have {rows} rows")
    if truth.dtype.kind not in "iu" or truth.min() < 0 or truth.max() >= num_labels:
        raise ValueError(f"y_true must hold class indices 0..{num_labels - 1}, got {np.unique(truth)[:10]}")
    for name, value in (("min_agreement", min_agreement), ("max_macro_f1_drop", max_macro_f1_drop)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")

    reference_pred = reference.argmax(axis=1)
    candidate_pred = candidate.argmax(axis=1)
    classes = list(range(num_labels))
    agreement = float(np.mean(reference_pred == candidate_pred))
    reference_f1 = float(f1_score(truth, reference_pred, average="macro", labels=classes, zero_division=0))
    candidate_f1 = float(f1_score(truth, candidate_pred, average="macro", labels=classes, zero_division=0))
    drop = reference_f1 - candidate_f1

    failed: list[str] = []
    if agreement < min_agreement - _EPSILON:
        failed.append(f"agreement {agreement:.3f} < min_agreement {min_agreement:.3f}")
    if drop > max_macro_f1_drop + _EPSILON:
        failed.append(
            f"macro_f1_drop {drop:.3f} > max_macro_f1_drop {max_macro_f1_drop:.3f} "
            f"(reference {reference_f1:.3f}, candidate {candidate_f1:.3f})"
        )
    return AgreementResult(
        rows=rows,
        agreement=agreement,
        reference_macro_f1=reference_f1,
        candidate_macro_f1=candidate_f1,
        macro_f1_drop=drop,
        passed=not failed,
        failed_rules=tuple(failed),
    )
