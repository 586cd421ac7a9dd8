"""Which runtime a packaged model serves with: torch fp32, or ONNX Runtime int8 when it agrees.

``packaging.runtime: onnx-int8`` asks for the quantized export. It is accepted only when, on the run's
test split, the int8 model's predictions agree with the fp32 model's on at least
``packaging.onnx.min_agreement`` of the texts and its macro-F1 is at most ``packaging.onnx.max_macro_f1_drop``
below fp32's. Otherwise the model is packaged for torch fp32 and the refusal, naming the rule and the
figures, is recorded with the version (tags ``serving.runtime`` and ``serving.onnx.*``), so the release
is never slower-but-wrong nor silently different from what was evaluated.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from refinery.config import RunConfig
from refinery.errors import PackagingError
from refinery.packaging.onnx_export import AgreementResult
from refinery.results import Record

logger = logging.getLogger(__name__)

TORCH = "torch"
ONNX_INT8 = "onnx-int8"


@dataclass(frozen=True)
class RuntimeChoice(Record):
    """The runtime a model is packaged for.

    Attributes:
        runtime: ``torch`` or ``onnx-int8``.
        model_dir: The folder to package (for onnx-int8 a copy of the model with the int8 graph added).
        agreement: The int8-versus-fp32 comparison, when onnx-int8 was asked for.
    """

    runtime: str
    model_dir: Path
    agreement: AgreementResult | None = None

    @property
    def refused(self) -> bool:
        """onnx-int8 was asked for and refused."""
        return self.agreement is not None and not self.agreement.passed

    def tags(self) -> dict[str, str]:
        """Registry tags recording the choice."""
        tags = {"serving.runtime": self.runtime}
        if self.agreement is not None:
            a = self.agreement
            tags |= {
                "serving.onnx.agreement": f"{a.agreement:.4f}",
                "serving.onnx.macro_f1_drop": f"{a.macro_f1_drop:.4f}",
                "serving.onnx.rows": str(a.rows),
                "serving.onnx.verdict": "accepted" if a.passed else "refused: " + "; ".join(a.failed_rules),
            }
        return tags


def choose_runtime(cfg: RunConfig, model_dir: Path, data_dir: Path | None, work_dir: Path) -> RuntimeChoice:
    """The runtime ``model_dir`` is packaged for, following ``packaging.runtime`` and its agreement rule.

    Args:
        cfg: Resolved configuration (``packaging``, ``model.max_length``).
        model_dir: The registered model (safetensors).
        data_dir: The prepared dataset (``test.parquet`` with ``text`` and ``label``); needed for onnx-int8.
        work_dir: Scratch space that outlives the packaging (the copy with the int8 graph goes here).

    Raises:
        PackagingError: onnx-int8 is asked for without a test split, or the export fails.
    """
    if cfg.packaging.runtime == TORCH:
        return RuntimeChoice(TORCH, Path(model_dir))
    import pandas as pd

    from refinery.modeling import load_classifier
    from refinery.packaging.onnx_export import check_agreement, export_int8
    from refinery.serving.onnx import load_onnx_classifier

    test = Path(data_dir) / "test.parquet" if data_dir is not None else None
    if test is None or not test.is_file():
        raise PackagingError(
            f"packaging.runtime onnx-int8 needs the test split to check the int8 model against fp32; {test} is missing"
        )
    frame = pd.read_parquet(test, columns=["text", "label"])
    candidate_dir = Path(work_dir) / "model-onnx-int8"
    shutil.copytree(model_dir, candidate_dir)
    export_int8(candidate_dir, candidate_dir, cfg.model.max_length)
    texts = frame["text"].astype(str).tolist()
    reference = load_classifier(Path(model_dir), max_length=cfg.model.max_length)
    candidate = load_onnx_classifier(candidate_dir, max_length=cfg.model.max_length)
    index = {label: i for i, label in enumerate(reference.labels)}
    unknown = sorted(set(frame["label"].astype(str)) - set(index))
    if unknown:
        raise PackagingError(f"{test}: labels {unknown} are not the model's ({', '.join(reference.labels)})")
    agreement = check_agreement(
        reference.predict_proba(texts),
        candidate.predict_proba(texts),
        [index[str(label)] for label in frame["label"]],
        cfg.packaging.onnx.min_agreement,
        cfg.packaging.onnx.max_macro_f1_drop,
    )
    if agreement.passed:
        logger.info(
            "onnx-int8 accepted: agreement %.4f, macro-F1 drop %.4f",
            agreement.agreement,
            agreement.macro_f1_drop,
        )
        return RuntimeChoice(ONNX_INT8, candidate_dir, agreement)
    logger.warning("onnx-int8 refused, packaging torch fp32: %s", "; ".join(agreement.failed_rules))
    return RuntimeChoice(TORCH, Path(model_dir), agreement)
