"""Where the parts of a transformers sequence classifier sit: the encoder under the task model, its
layers and embeddings, the classification head beside it, and the model inside a peft wrapper.

Inference (:mod:`refinery.pooling`, :mod:`refinery.modeling`) and training
(:mod:`refinery.training.techniques`) both need to find them; they live here, outside ``training/``, so
that serving imports no training code (training imports from here, never the other way). Layers are
found by attribute names for BERT-, RoBERTa- and DistilBERT-style models and others laid out the same
way. torch is imported inside the functions that use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from refinery.errors import TrainingError

if TYPE_CHECKING:
    from torch import nn

# Where the encoder layers and the embeddings sit under the base model (``model.<base_model_prefix>``):
# BERT/RoBERTa/ELECTRA/DeBERTa use encoder.layer, DistilBERT transformer.layer.
LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")
EMBEDDING_PATHS = ("embeddings", "embed_tokens")


@dataclass(frozen=True)
class EncoderParts:
    """The parts of a sequence-classification model the techniques act on.

    Attributes:
        model_type: ``config.model_type`` (e.g. ``"bert"``), for messages.
        embeddings: The embedding module.
        layers: The encoder layers, lowest first.
    """

    model_type: str
    embeddings: nn.Module
    layers: tuple[nn.Module, ...]

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The embeddings' parameters."""
        return list(self.embeddings.parameters())

    def layer_parameters(self, index: int) -> list[nn.Parameter]:
        """The parameters of encoder layer ``index`` (0 is the lowest)."""
        return list(self.layers[index].parameters())


def unwrap_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper (the model itself when it is not wrapped)."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def model_type(model: Any) -> str:
    """``config.model_type`` (e.g. ``"bert"``), else the class name: how messages name a model."""
    return str(getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__)


def base_model(model: Any) -> Any:
    """The encoder under a task model (``model.bert`` for BERT), or None."""
    from torch import nn

    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None) if prefix else None
    return base if isinstance(base, nn.Module) and base is not model else None


def head_module_names(model: Any) -> tuple[str, ...]:
    """Names of the task model's own modules with weights, outside the encoder (``("classifier",)``
    for BERT, ``("pre_classifier", "classifier")`` for DistilBERT): the classification head.

    Raises:
        TrainingError: The model has no base model or no such module.
    """
    model = unwrap_model(model)
    base = base_model(model)
    names = tuple(
        name
        for name, child in model.named_children()
        if child is not base and any(True for _ in child.parameters())
    )
    if base is None or not names:
        raise TrainingError(f"cannot find the classification head of the {model_type(model)!r} model")
    return names


def _attribute_path(root: Any, dotted: str) -> Any:
    node = root
    for part in dotted.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def encoder_parts(model: Any) -> EncoderParts:
    """Find the embeddings and the encoder layers of a sequence-classification model.

    Looks under the base model (``model.<base_model_prefix>``, e.g. ``model.bert``) for the layers at
    one of :data:`LAYER_PATHS` and the embeddings at one of :data:`EMBEDDING_PATHS`; a peft-wrapped
    model is unwrapped first.

    Raises:
        TrainingError: The model is not laid out that way; the message names its model type.
    """
    from torch import nn

    model = unwrap_model(model)
    kind = model_type(model)
    base = base_model(model)
    layers = embeddings = None
    if base is not None:
        layers = next(
            (
                found
                for path in LAYER_PATHS
                if isinstance(found := _attribute_path(base, path), nn.ModuleList) and len(found)
            ),
            None,
        )
        embeddings = next(
            (
                found
                for path in EMBEDDING_PATHS
                if isinstance(found := _attribute_path(base, path), nn.Module)
            ),
            None,
        )
    if base is None or layers is None or embeddings is None:
        prefix = getattr(model, "base_model_prefix", "") or "<base>"
        raise TrainingError(
            f"cannot find the encoder layers of the {kind!r} model ({type(model).__name__}): looked for"
            f" {' / '.join(f'{prefix}.{p}' for p in LAYER_PATHS)} and {prefix}.embeddings; freeze_embeddings,"
            " freeze_layers, gradual_unfreezing and layer_lr_decay support BERT-, RoBERTa- and"
            " DistilBERT-style models"
        )
    return EncoderParts(model_type=kind, embeddings=embeddings, layers=tuple(layers))
