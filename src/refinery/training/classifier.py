"""The model a fine-tuning trains: a sequence classifier for ``data.labels`` built from the base model.

:func:`build_classifier` seeds, loads the tokenizer and the model (a new head when the base has another
or none; the dropout override and the attention implementation applied), sets the pooling
(:mod:`refinery.pooling`), the CPU threads and the effective ``max_length``, and then limits what trains:
frozen embeddings and lowest layers, or LoRA adapters (:mod:`refinery.training.techniques`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.errors import TrainingError
from refinery.modeling import effective_max_length
from refinery.pooling import PoolingError, resolve_pooling, use_pooling
from refinery.training.device import cpu_thread_count

if TYPE_CHECKING:
    from refinery.config import RunConfig, TrainingConfig
    from refinery.training.techniques import DeviceSettings, EncoderParts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Classifier:
    """A classifier ready to train.

    Attributes:
        model: The model to train (the peft model under LoRA).
        tokenizer: The base model's tokenizer.
        parts: Its embeddings and encoder layers; None for an architecture whose layers cannot be found
            (trained without layer-wise techniques).
        dropout: The dropout config fields the ``training.dropout`` override set; None without one.
        max_length: The tokens per text: ``model.max_length``, or less where the model accepts less.
    """

    model: Any
    tokenizer: Any
    parts: EncoderParts | None
    dropout: dict[str, float] | None
    max_length: int


def build_classifier(
    cfg: RunConfig, base: Path, labels: tuple[str, ...], settings: DeviceSettings
) -> Classifier:
    """A fresh classifier for ``labels`` from ``base``, seeded by ``training.seed``.

    Raises:
        TrainingError: The base cannot be loaded, its pooling or dropout cannot be set, or a technique
            does not fit it (see :mod:`refinery.training.techniques`).
    """
    import torch
    from transformers import set_seed

    tcfg = cfg.training
    # The classification head (and LoRA's adapters) are freshly initialised: seed before building.
    set_seed(tcfg.seed)
    tokenizer, model, dropout = _load(base, labels, tcfg.dropout, settings.attn_implementation)
    try:
        model = use_pooling(model, resolve_pooling(cfg.model.pooling, base, model))
    except PoolingError as exc:
        raise TrainingError(str(exc)) from exc
    if not torch.cuda.is_available():
        torch.set_num_threads(cpu_thread_count(model.num_parameters()))
    max_length = effective_max_length(cfg.model.max_length, model.config, tokenizer)
    if max_length < cfg.model.max_length:
        logger.warning(
            "model.max_length %d exceeds what %s accepts; truncating to %d",
            cfg.model.max_length,
            base,
            max_length,
        )
    model, parts = _limit_updates(model, tcfg)
    return Classifier(model=model, tokenizer=tokenizer, parts=parts, dropout=dropout, max_length=max_length)


def _load(
    base: Path, labels: tuple[str, ...], dropout: float | None, attn_implementation: str | None
) -> tuple[Any, Any, dict[str, float] | None]:
    """The tokenizer and a classifier for ``labels`` built from ``base`` (a new head when the base has
    another or none), with the dropout override applied to its config; and the dropout fields set.

    Raises:
        TrainingError: The base cannot be loaded, or its config has no dropout fields to override.
    """
    from transformers import AutoConfig, AutoTokenizer

    from refinery.training.techniques import override_dropout

    try:
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
        config = AutoConfig.from_pretrained(
            base,
            local_files_only=True,
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            problem_type="single_label_classification",
        )
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... for a bad dir
        raise TrainingError(f"cannot load base model {base} (model.base): {exc}") from exc
    # Dropout modules are built from the config, so the override goes in before the model is.
    dropout_fields = override_dropout(config, dropout) if dropout is not None else None
    try:
        return tokenizer, _load_model(base, config, attn_implementation), dropout_fields
    except Exception as exc:  # as above, plus safetensors errors for corrupt weights
        raise TrainingError(f"cannot load base model {base} (model.base): {exc}") from exc


def _load_model(base: Path, config: Any, attn_implementation: str | None) -> Any:
    """The classifier's weights from ``base``, with ``attn_implementation`` where the model supports it."""
    from transformers import AutoModelForSequenceClassification

    def load(**kwargs: Any) -> Any:
        return AutoModelForSequenceClassification.from_pretrained(
            base,
            config=config,
            use_safetensors=True,
            local_files_only=True,
            # A base with another head (or none, e.g. a sentence-embedding BertModel) gets a new head
            # sized for our labels.
            ignore_mismatched_sizes=True,
            **kwargs,
        )

    if attn_implementation is None:
        return load()
    try:
        return load(attn_implementation=attn_implementation)
    except ValueError as exc:
        if attn_implementation not in str(exc).lower():
            raise
        logger.warning("%s does not support %s attention; using its default", base, attn_implementation)
        return load()


def _limit_updates(model: Any, tcfg: TrainingConfig) -> tuple[Any, EncoderParts | None]:
    """Freeze what ``training.freeze_*`` asks for, or wrap the model with LoRA adapters.

    Returns:
        The model to train (the peft model under LoRA) and its encoder parts; None for an architecture
        whose layers cannot be found, when no layer-wise technique needs them.

    Raises:
        TrainingError: A layer-wise technique is asked of a model whose layers cannot be found, or a
            technique does not fit the model (see :mod:`refinery.training.techniques`).
    """
    from refinery.training import techniques

    layer_wise = tcfg.freeze_embeddings or tcfg.freeze_layers > 0 or tcfg.gradual_unfreezing
    try:
        parts: EncoderParts | None = techniques.encoder_parts(model)
    except TrainingError:
        if layer_wise or tcfg.layer_lr_decay is not None:
            raise
        parts = None  # plain fine-tuning of an architecture laid out otherwise
    if parts is not None:
        techniques.freeze(parts, embeddings=tcfg.freeze_embeddings, lowest_layers=tcfg.freeze_layers)
    if tcfg.lora.enabled:
        model = techniques.add_lora(model, tcfg.lora)
    return model, parts
