"""How a classifier turns the encoder's token vectors into the one vector its head classifies.

transformers' BERT classifier classifies the ``[CLS]`` token's vector (through the pooler, a dense
layer and tanh). A sentence-embedding base such as all-MiniLM-L6-v2 was trained to represent a text by
the *mean* of its token vectors instead (its sentence-transformers ``1_Pooling/config.json`` says
``pooling_mode_mean_tokens``), so its ``[CLS]`` vector is not what it learned to make meaningful.
``model.pooling`` picks the pooling:

* ``cls``: the model's own head, as transformers builds it.
* ``mean``: the mean of the last hidden states over the real (unmasked) tokens, then the model's
  dropout and linear classifier. Supported where the head is exactly that (BERT-style: one ``classifier``
  ``nn.Linear`` beside the encoder); the encoder's pooler is then unused and frozen.
* ``auto`` (the default): ``mean`` when the base says it was trained with mean pooling and its head
  supports it, else ``cls``.

The choice is stored in the model's ``config.json`` (:data:`POOLING_FIELD`), so every loader of a
trained model (evaluation, serving, a LoRA adapter's merge) applies it with :func:`apply_saved_pooling`.
torch and transformers are imported inside the functions that use them.
"""

from __future__ import annotations

import json
import logging
import types
from pathlib import Path
from typing import Any, Literal

from refinery.errors import RefineryError, TrainingError

logger = logging.getLogger(__name__)

POOLING_FIELD = "refinery_pooling"  # in config.json: "cls" or "mean"
Pooling = Literal["cls", "mean"]


class PoolingError(RefineryError):
    """``model.pooling: mean`` asked of a model whose head is not one linear layer over a pooled vector."""


def base_pooling(base: Path) -> Pooling:
    """The pooling a base model was trained with: ``mean`` when its sentence-transformers modules
    (``modules.json``) include a Pooling module whose config turns on mean pooling and nothing else;
    ``cls`` otherwise (a plain transformers model has no such files)."""
    base = Path(base)
    try:
        modules = json.loads((base / "modules.json").read_text())
        folder = next(m["path"] for m in modules if str(m.get("type", "")).endswith(".Pooling"))
        modes = json.loads((base / folder / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return "cls"
    others = ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")
    mean_only = bool(modes.get("pooling_mode_mean_tokens")) and not any(modes.get(k) for k in others)
    return "mean" if mean_only else "cls"


def mean_pooling_unsupported(model: Any) -> str | None:
    """Why ``model`` cannot pool by mean (its head is not one linear classifier beside the encoder), or
    None when it can."""
    from torch import nn

    from refinery.architecture import head_module_names

    classifier = getattr(model, "classifier", None)
    try:
        head = list(head_module_names(model))  # raises when the model has no encoder or no head
    except TrainingError:
        head = []
    hidden = getattr(model.config, "hidden_size", None)
    if (
        isinstance(classifier, nn.Linear)
        and isinstance(getattr(model, "dropout", None), nn.Dropout)
        and head == ["classifier"]
        and classifier.in_features == hidden
    ):
        return None
    return (
        f"the {getattr(model.config, 'model_type', '?')!r} model's head ({type(model).__name__}: "
        f"{', '.join(head) or 'none'}) is not one linear classifier over a pooled vector"
    )


def use_pooling(model: Any, pooling: Pooling) -> Any:
    """Make ``model`` (a transformers sequence classifier) pool the way ``pooling`` says, and record it
    in its config so that saving and loading keep it.

    Raises:
        PoolingError: ``mean`` for a model :func:`mean_pooling_unsupported` refuses.
    """
    model.config.update({POOLING_FIELD: pooling})
    if pooling == "cls":
        return model
    why = mean_pooling_unsupported(model)
    if why is not None:
        raise PoolingError(f"model.pooling: mean is not possible: {why}; use model.pooling: cls")
    pooler = getattr(getattr(model, model.base_model_prefix), "pooler", None)
    if pooler is not None:
        # Unused from now on: frozen, so it is neither counted as trained nor given optimizer state.
        pooler.requires_grad_(False)
    model.forward = types.MethodType(_mean_pooled_forward, model)
    return model


def saved_pooling(model: Any) -> str:
    """The pooling recorded in a model's config (:data:`POOLING_FIELD`); ``cls`` for models saved
    without one."""
    return str(getattr(model.config, POOLING_FIELD, "cls"))


def apply_saved_pooling(model: Any) -> Any:
    """Apply the pooling a loaded model was trained with (:func:`saved_pooling`)."""
    pooling = saved_pooling(model)
    if pooling == "mean":
        return use_pooling(model, "mean")
    if pooling == "cls":
        return use_pooling(model, "cls")
    raise PoolingError(f"config.json: {POOLING_FIELD} is {pooling!r}; expected 'cls' or 'mean'")


def resolve_pooling(requested: str, base: Path, model: Any) -> Pooling:
    """``model.pooling`` for a base: ``auto`` becomes :func:`base_pooling`'s answer where the model's
    head can pool that way, else ``cls`` (logged); ``cls`` and ``mean`` stay."""
    if requested != "auto":
        return "mean" if requested == "mean" else "cls"
    if base_pooling(base) == "cls":
        return "cls"
    why = mean_pooling_unsupported(model)
    if why is not None:
        logger.info("%s was trained with mean pooling, but %s: its [CLS] head is used", base, why)
        return "cls"
    return "mean"


def _mean_pooled_forward(
    self: Any,
    input_ids: Any = None,
    attention_mask: Any = None,
    token_type_ids: Any = None,
    labels: Any = None,
    **kwargs: Any,
) -> Any:
    """A BERT-style classifier's forward with the mean of the real tokens' last hidden states in place
    of the pooler's ``[CLS]`` vector; the loss (with ``labels``) is the plain cross-entropy, as the
    model's own."""
    import torch
    from torch.nn import functional
    from transformers.modeling_outputs import SequenceClassifierOutput

    kwargs.pop("return_dict", None)
    if token_type_ids is not None:
        kwargs["token_type_ids"] = token_type_ids
    outputs = getattr(self, self.base_model_prefix)(
        input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs
    )
    hidden = outputs.last_hidden_state
    if attention_mask is None:
        weights = torch.ones(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)
    else:
        weights = attention_mask.to(hidden.dtype)
    weights = weights.unsqueeze(-1)
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    logits = self.classifier(self.dropout(pooled))
    loss = functional.cross_entropy(logits.float(), labels.view(-1)) if labels is not None else None
    return SequenceClassifierOutput(
        loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
    )
