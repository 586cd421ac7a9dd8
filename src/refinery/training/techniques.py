"""Fine-tuning techniques: what ``training`` asks for beyond plain full fine-tuning, as small functions
the orchestrator (:mod:`refinery.training.finetune`) applies to a loaded model and its Trainer.

Against catastrophic forgetting:

* ``freeze_embeddings`` / ``freeze_layers``: the embeddings and the lowest N encoder layers get
  ``requires_grad = False`` before training and are left out of the optimizer.
* ``gradual_unfreezing``: the first epoch trains only the head (the classifier and, for BERT, the pooler);
  each later epoch unfreezes one more encoder layer, from the top; once every layer trains, the next
  epoch unfreezes the embeddings. Layers frozen by ``freeze_layers``/``freeze_embeddings`` stay frozen.
  The optimizer holds every parameter that will ever train from the start (it is built before the
  first epoch freezes anything): a frozen parameter gets no gradient, and AdamW skips a parameter
  without a gradient (no update, no weight decay, no moment state), so nothing has to be rebuilt
  when a layer thaws and the learning-rate schedule runs on unchanged.
* ``layer_lr_decay`` (LLRD): one optimizer parameter group per depth; the head and the top encoder
  layer train at the full learning rate, each layer below at ``decay`` times the one above, the
  embeddings below the lowest layer. Biases and LayerNorm weights get no weight decay.
* ``lora``: low-rank adapters (peft) on ``lora.target_modules``; only the adapters and the
  classification head (peft's ``modules_to_save``) train.

Encoder layers are found by attribute names for BERT-, RoBERTa- and DistilBERT-style models (and others
laid out the same way); :func:`refinery.architecture.encoder_parts` raises a :class:`TrainingError` naming
the model type otherwise. torch, transformers and peft are imported inside the functions that use them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.architecture import EncoderParts, encoder_parts, head_module_names, model_type, unwrap_model
from refinery.errors import TrainingError
from refinery.results import Record

if TYPE_CHECKING:
    import torch
    from torch import nn

    from refinery.config import LoraConfig

logger = logging.getLogger(__name__)

# Model config attributes holding the hidden and the attention dropout: BERT/RoBERTa/ELECTRA/DeBERTa
# name them *_prob, DistilBERT dropout/attention_dropout.
HIDDEN_DROPOUT_FIELDS = ("hidden_dropout_prob", "dropout", "hidden_dropout")
ATTENTION_DROPOUT_FIELDS = ("attention_probs_dropout_prob", "attention_dropout")


@dataclass(frozen=True)
class LoraSummary(Record):
    """The adapters a LoRA run trained and how they were saved."""

    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]
    modules_to_save: tuple[str, ...]
    merged: bool
    # The base model the adapter applies to (adapter mode: loading the model needs it).
    base_model: str


@dataclass(frozen=True)
class AppliedTechniques(Record):
    """What a fine-tuning run did beyond plain full fine-tuning; part of ``training.json``.

    Attributes:
        trainable_parameters: Parameters the optimizer updated (by the last epoch, for gradual unfreezing).
        total_parameters: All parameters of the trained model (adapters included).
        trainable_share: ``trainable_parameters / total_parameters``.
        encoder_layers: How many encoder layers the model has (None when not found: an architecture
            :func:`encoder_parts` does not know, trained without layer-wise techniques).
        frozen_embeddings: The embeddings never trained.
        frozen_layers: Indices (0 = lowest) of the encoder layers none of whose weights trained.
        gradual_unfreezing: Layers were unfrozen one per epoch.
        layer_learning_rates: Learning rate per parameter group name under layer-wise decay, else None.
        label_smoothing: Label smoothing of the training loss.
        dropout: The hidden/attention dropout override, with the config fields it set.
        scheduler: The learning-rate schedule.
        gradient_accumulation_steps: Batches per optimizer step.
        effective_batch_size: Examples per optimizer step (per device).
        precision: ``fp32``, ``bf16`` or ``fp16`` (mixed precision).
        optimizer: The Trainer's optimizer name.
        attention: The attention implementation the model ran.
        compiled: Whether the model was compiled with torch.compile.
        lora: The adapters, for a LoRA run.
        pooling: What the head classified: ``cls`` or ``mean`` (see :mod:`refinery.pooling`).
    """

    trainable_parameters: int
    total_parameters: int
    trainable_share: float
    encoder_layers: int | None
    frozen_embeddings: bool
    frozen_layers: tuple[int, ...]
    gradual_unfreezing: bool
    layer_learning_rates: dict[str, float] | None
    label_smoothing: float
    dropout: dict[str, float] | None
    scheduler: str
    gradient_accumulation_steps: int
    effective_batch_size: int
    precision: str
    optimizer: str
    attention: str
    compiled: bool
    lora: LoraSummary | None = None
    pooling: str = "cls"  # records written before model.pooling existed were all cls


def override_dropout(config: Any, probability: float) -> dict[str, float]:
    """Set a model config's hidden and attention dropout to ``probability`` before the model is built.

    Args:
        config: A transformers model config.
        probability: The dropout probability (``training.dropout``).

    Returns:
        The config fields set, with their new value.

    Raises:
        TrainingError: The config has no hidden or no attention dropout field; names the model type.
    """
    hidden = [name for name in HIDDEN_DROPOUT_FIELDS if isinstance(getattr(config, name, None), float)]
    attention = [name for name in ATTENTION_DROPOUT_FIELDS if isinstance(getattr(config, name, None), float)]
    if not hidden or not attention:
        raise TrainingError(
            f"training.dropout: the {getattr(config, 'model_type', '?')!r} model config has no"
            f" {'hidden' if not hidden else 'attention'} dropout field (looked for"
            f" {', '.join(HIDDEN_DROPOUT_FIELDS if not hidden else ATTENTION_DROPOUT_FIELDS)})"
        )
    for name in (*hidden, *attention):
        setattr(config, name, float(probability))
    return {name: float(probability) for name in (*hidden, *attention)}


def freeze(parts: EncoderParts, *, embeddings: bool, lowest_layers: int) -> None:
    """Keep the embeddings and/or the lowest ``lowest_layers`` encoder layers fixed.

    Raises:
        TrainingError: ``lowest_layers`` exceeds the model's encoder layers.
    """
    if lowest_layers > len(parts.layers):
        raise TrainingError(
            f"training.freeze_layers={lowest_layers} exceeds the {len(parts.layers)} encoder layers of the"
            f" {parts.model_type!r} model"
        )
    frozen = [*(parts.embedding_parameters() if embeddings else [])]
    for index in range(lowest_layers):
        frozen.extend(parts.layer_parameters(index))
    for parameter in frozen:
        parameter.requires_grad_(False)


def unfrozen_at(
    epoch: int, trainable_layers: Sequence[int], embeddings_trainable: bool
) -> tuple[set[int], bool]:
    """Gradual unfreezing's schedule: which encoder layers and whether the embeddings train in ``epoch``.

    Args:
        epoch: 0-based epoch index; epoch 0 trains the head only.
        trainable_layers: Indices of the layers that may train (those ``freeze_layers`` left), any order.
        embeddings_trainable: Whether the embeddings may train (``freeze_embeddings`` is off).

    Returns:
        The indices of the layers that train, and whether the embeddings do.
    """
    from_top = sorted(trainable_layers, reverse=True)
    count = max(0, epoch)
    return set(from_top[:count]), embeddings_trainable and count > len(from_top)


def gradual_unfreezing(parts: EncoderParts) -> Any:
    """A Trainer callback unfreezing one more encoder layer, from the top, at the start of every epoch
    after the first (see :func:`unfrozen_at`).

    Layers and embeddings already frozen when the callback is built (``freeze_layers``,
    ``freeze_embeddings``) stay frozen. The Trainer builds its optimizer before the first epoch starts,
    so it already holds every parameter this callback will unfreeze.

    The callback's ``schedule`` maps each epoch (1-based) to the number of encoder layers it trained.
    Under torch.compile each change of ``requires_grad`` costs one recompilation, once an epoch.
    """
    from transformers import TrainerCallback

    def trainable(parameters: Iterable[nn.Parameter]) -> bool:
        return all(p.requires_grad for p in parameters)

    trainable_layers = [i for i in range(len(parts.layers)) if trainable(parts.layer_parameters(i))]
    embeddings_trainable = trainable(parts.embedding_parameters())

    class GradualUnfreezing(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.schedule: dict[int, int] = {}

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # state.epoch is the number of epochs done (a float; mid-epoch when resuming).
            epoch = math.floor((state.epoch or 0.0) + 1e-6)
            layers, embeddings = unfrozen_at(epoch, trainable_layers, embeddings_trainable)
            for index in trainable_layers:
                for parameter in parts.layer_parameters(index):
                    parameter.requires_grad_(index in layers)
            if embeddings_trainable:
                for parameter in parts.embedding_parameters():
                    parameter.requires_grad_(embeddings)
            self.schedule[epoch + 1] = len(layers)
            logger.info(
                "gradual unfreezing, epoch %d: head%s%s",
                epoch + 1,
                f" + top {len(layers)} encoder layer(s)" if layers else " only",
                " + embeddings" if embeddings else "",
            )

    return GradualUnfreezing()


def _no_decay_ids(model: nn.Module) -> set[int]:
    """Parameters that get no weight decay: biases and normalisation weights."""
    from torch import nn

    ids: set[int] = set()
    for module in model.modules():
        norm = isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))
        for name, parameter in module.named_parameters(recurse=False):
            if norm or name == "bias" or name.endswith("_bias"):
                ids.add(id(parameter))
    return ids


def optimizer_groups(
    model: nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    layer_lr_decay: float | None = None,
    parts: EncoderParts | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups for AdamW over the parameters that require gradients now.

    Without ``layer_lr_decay`` there are two groups, with and without weight decay, at
    ``learning_rate``. With it, every depth gets its pair of groups: the head (and anything outside
    the embeddings and the encoder layers) and the top encoder layer at ``learning_rate``, layer ``i``
    of ``L`` at ``learning_rate * decay ** (L - 1 - i)``, the embeddings at
    ``learning_rate * decay ** L``. Biases and LayerNorm weights get no weight decay. Each group carries
    a ``name`` (``head``, ``layer.3``, ``embeddings``, ``all``; ``.no_decay`` appended); the
    full-rate groups come first, so the Trainer's logged learning rate is the head's.

    Args:
        model: The model being trained (peft-wrapped or not).
        learning_rate: ``training.learning_rate``.
        weight_decay: ``training.weight_decay``.
        layer_lr_decay: ``training.layer_lr_decay``, or None for one rate.
        parts: The model's :func:`encoder_parts` (found when omitted and needed).

    Raises:
        TrainingError: ``layer_lr_decay`` is set for a model whose layers cannot be found.
    """
    depth_of: dict[int, tuple[int, str]] = {}
    if layer_lr_decay is not None:
        parts = parts or encoder_parts(model)
        count = len(parts.layers)
        for parameter in parts.embedding_parameters():
            depth_of[id(parameter)] = (count, "embeddings")
        for index in range(count):
            for parameter in parts.layer_parameters(index):
                depth_of[id(parameter)] = (count - 1 - index, f"layer.{index}")
    no_decay = _no_decay_ids(model)
    groups: dict[tuple[int, str, bool], list[nn.Parameter]] = {}
    default = (0, "head") if layer_lr_decay is not None else (0, "all")
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        depth, name = depth_of.get(id(parameter), default)
        groups.setdefault((depth, name, id(parameter) in no_decay), []).append(parameter)
    decay = 1.0 if layer_lr_decay is None else layer_lr_decay
    # Shallowest first ("head" before "layer.N" at depth 0), then with-decay before no-decay.
    ordered = sorted(groups, key=lambda key: (key[0], key[1] != default[1], key[2]))
    return [
        {
            "params": groups[key],
            "lr": learning_rate * decay ** key[0],
            "weight_decay": 0.0 if key[2] else weight_decay,
            "name": key[1] + (".no_decay" if key[2] else ""),
        }
        for key in ordered
    ]


def group_learning_rates(groups: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Learning rate per group name (the ``.no_decay`` twins folded into their group)."""
    return {str(g["name"]).removesuffix(".no_decay"): float(g["lr"]) for g in groups}


def classification_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy, optionally class-weighted and label-smoothed (torch's definitions: with
    weights, the smoothed targets are weighted too and the mean is over the targets' weights)."""
    import torch
    from torch.nn import functional

    weight = None if class_weights is None else class_weights.to(device=logits.device, dtype=torch.float32)
    return functional.cross_entropy(logits.float(), labels, weight=weight, label_smoothing=label_smoothing)


def trainer_class(
    *,
    class_weights: Sequence[float] | None,
    label_smoothing: float,
    layer_lr_decay: float | None,
    parts: EncoderParts | None,
    on_optimizer: Callable[[list[dict[str, Any]]], None] | None = None,
) -> type:
    """A Trainer computing the training loss with :func:`classification_loss` and building its
    optimizer from :func:`optimizer_groups`.

    The validation loss stays the model's own plain cross-entropy, so it compares across runs with and
    without class weights or label smoothing. The training loss is a per-batch mean; the Trainer divides
    it by the gradient accumulation steps. The optimizer class and its arguments (fused AdamW, betas,
    eps) come from the Trainer's ``optim`` setting; only the parameter groups are ours.

    Args:
        class_weights: Loss weight per class index, or None.
        label_smoothing: ``training.label_smoothing``.
        layer_lr_decay: ``training.layer_lr_decay``, or None.
        parts: The model's encoder parts (needed for ``layer_lr_decay``).
        on_optimizer: Called with the parameter groups once the optimizer is built (for the record).
    """
    import torch
    from transformers import Trainer

    weights = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None

    class RefineryTrainer(Trainer):  # type: ignore[misc]
        # A per-batch mean, not normalised over the accumulated batch: the Trainer divides it by the
        # gradient accumulation steps.
        loss_is_scaled_for_ga = False

        def compute_loss(
            self,
            model: torch.nn.Module,
            inputs: dict[str, torch.Tensor | Any],
            return_outputs: bool = False,
            num_items_in_batch: torch.Tensor | int | None = None,
        ) -> torch.Tensor | tuple[torch.Tensor, Any]:
            if not model.training or "labels" not in inputs:
                # Evaluation keeps the model's own (unweighted, unsmoothed) loss. No num_items_in_batch:
                # given one, the Trainer multiplies the loss by the number of processes (a correction
                # meant for summed token losses), which doubled the validation loss under DDP.
                return super().compute_loss(model, inputs, return_outputs, None)
            labels = inputs["labels"]
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
            loss = classification_loss(logits, labels, class_weights=weights, label_smoothing=label_smoothing)
            return (loss, outputs) if return_outputs else loss

        def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
            if self.optimizer is None:
                opt_model: Any = self.model if model is None else model
                groups = optimizer_groups(
                    opt_model,
                    learning_rate=self.args.learning_rate,
                    weight_decay=self.args.weight_decay,
                    layer_lr_decay=layer_lr_decay,
                    parts=parts,
                )
                optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                self.optimizer = optimizer_cls(groups, **kwargs)
                if on_optimizer is not None:
                    on_optimizer(groups)
            return self.optimizer

    return RefineryTrainer


@dataclass(frozen=True)
class DeviceSettings:
    """How training uses the device: mixed precision, optimizer kernel, attention, compilation."""

    bf16: bool
    fp16: bool
    optim: str | None  # None: the Trainer's default
    attn_implementation: str | None  # None: transformers' default
    torch_compile: bool

    @property
    def precision(self) -> str:
        """``bf16``, ``fp16`` or ``fp32``."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"


def cpu_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), which makes bf16 autocast pay off."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private in torch 2.x: probed
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def device_settings(
    *, cuda: bool, bf16_supported: bool, compile_requested: bool, precision: str = "auto"
) -> DeviceSettings:
    """The efficiency settings for the device training runs on.

    On CUDA: mixed precision as ``precision`` says (``auto``: bf16 where the GPU supports it, else fp16);
    fused AdamW; PyTorch's scaled dot-product attention; torch.compile when ``training.compile`` asks for
    it. On CPU (``bf16_supported``: the CPU has native bf16, see :func:`cpu_native_bf16`): ``auto`` is
    bf16 autocast where the CPU has native bf16, else fp32; the Trainer's defaults otherwise, and no
    compilation (``training.compile`` is CUDA only; a warning says so).

    Raises:
        TrainingError: ``precision`` asks for what the device cannot do (fp16 on CPU, bf16 on a GPU
            without bf16).
    """
    if precision == "fp16" and not cuda:
        raise TrainingError("training.precision fp16 needs a CUDA GPU; this run has none (use auto or fp32)")
    if precision == "bf16" and cuda and not bf16_supported:
        raise TrainingError("training.precision bf16: this GPU does not support bf16 (use auto or fp16)")
    if not cuda:
        if compile_requested:
            logger.warning("training.compile is ignored: torch.compile is used on CUDA only")
        bf16 = precision == "bf16" or (precision == "auto" and bf16_supported)
        return DeviceSettings(
            bf16=bf16, fp16=False, optim=None, attn_implementation=None, torch_compile=False
        )
    bf16 = precision == "bf16" or (precision == "auto" and bf16_supported)
    return DeviceSettings(
        bf16=bf16,
        fp16=precision == "fp16" or (precision == "auto" and not bf16_supported),
        optim="adamw_torch_fused",
        attn_implementation="sdpa",
        torch_compile=compile_requested,
    )


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(parameters requiring gradients, all parameters), each tensor counted once."""
    seen: dict[int, tuple[int, bool]] = {}
    for parameter in model.parameters():
        seen[id(parameter)] = (parameter.numel(), parameter.requires_grad)
    return sum(n for n, grad in seen.values() if grad), sum(n for n, _ in seen.values())


def frozen_parts(parts: EncoderParts) -> tuple[bool, tuple[int, ...]]:
    """Whether the embeddings are entirely frozen now, and which encoder layers are."""

    def frozen(parameters: Iterable[nn.Parameter]) -> bool:
        return not any(p.requires_grad for p in parameters)

    layers = tuple(i for i in range(len(parts.layers)) if frozen(parts.layer_parameters(i)))
    return frozen(parts.embedding_parameters()), layers


# -- LoRA ---------------------------------------------------------------------------------------------


def add_lora(model: Any, lora: LoraConfig) -> Any:
    """Wrap ``model`` with LoRA adapters (peft): only the adapters and the classification head train.

    Args:
        model: A transformers sequence-classification model (changed in place: adapters are injected).
        lora: ``training.lora``.

    Returns:
        The peft model.

    Raises:
        TrainingError: A target module is missing from the model, or the head cannot be found.
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    heads = head_module_names(model)
    config = PeftLoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        modules_to_save=list(heads),
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise TrainingError(
            f"training.lora.target_modules {list(lora.target_modules)} do not fit the"
            f" {model_type(model)!r} model: {exc}"
        ) from exc


def lora_summary(model: Any, lora: LoraConfig) -> LoraSummary:
    """What :func:`add_lora` set up, for the record."""
    config = model.peft_config["default"]
    return LoraSummary(
        r=lora.r,
        alpha=lora.alpha,
        dropout=lora.dropout,
        target_modules=tuple(sorted(config.target_modules)),
        # peft's config also lists its defaults for other architectures ("score"); record what is there.
        modules_to_save=head_module_names(model),
        merged=lora.merge,
        base_model=str(config.base_model_name_or_path),
    )


def save_lora(model: Any, out_dir: Path, *, merge: bool) -> None:
    """Save a trained peft model as safetensors.

    ``merge``: the adapters are merged into the base weights and the result saved as a plain model
    (``model.safetensors``, ``config.json``) that :func:`refinery.modeling.load_classifier` loads.
    Otherwise the adapter is saved (``adapter_model.safetensors`` with the trained head,
    ``adapter_config.json`` naming the base model) with the classifier's ``config.json``; load it with
    :func:`refinery.modeling.load_lora_classifier`.
    """
    if merge:
        plain = model.merge_and_unload()
        plain.save_pretrained(out_dir)
        return
    model.save_pretrained(out_dir, safe_serialization=True)
    unwrap_model(model).config.save_pretrained(out_dir)
