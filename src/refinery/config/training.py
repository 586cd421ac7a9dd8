"""The ``model``, ``training`` and ``hpo`` sections: the base model, fine-tuning and the
hyper-parameter search."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from refinery.config._base import _Strict


class ModelConfig(_Strict):
    """The pre-trained model to fine-tune."""

    base: str = Field(
        description="Directory (or fsspec URI) holding a transformers model saved as safetensors."
    )
    max_length: int = Field(128, ge=8, le=4096)
    pooling: Literal["auto", "cls", "mean"] = Field(
        "auto",
        description="What the classification head reads: cls the model's own head ([CLS] token), mean the"
        " mean of the real tokens' last hidden states (BERT-style heads); auto is mean for a base trained"
        " with mean pooling (a sentence-transformers export says so), else cls.",
    )
    cache_dir: str | None = Field(
        None,
        description="Where a base model given as a URI or hub id is downloaded once; empty means"
        " <state_dir>/model-cache.",
    )


class LoraConfig(_Strict):
    """Low-rank adapters (peft) instead of updating every weight: only the adapters and the head train."""

    enabled: bool = False
    r: int = Field(8, ge=1, description="Rank of the adapter matrices.")
    alpha: int = Field(16, ge=1, description="Scaling numerator: updates are scaled by alpha / r.")
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: tuple[str, ...] = Field(
        ("query", "value"), description="Names of the linear layers that get adapters."
    )
    merge: bool = Field(
        True,
        description="Merge the adapters into the base weights for serving (a plain model); false saves"
        " the adapter beside the base model instead.",
    )


class CheckpointConfig(_Strict):
    """Preemption safety: periodic checkpoints a re-run of the step resumes from."""

    dir: str | None = Field(
        None,
        description="Where checkpoints live, under a folder per run key (a PVC on a cluster); empty"
        " means <state_dir>/checkpoints.",
    )
    every_steps: int | None = Field(
        None, ge=1, description="Save every N optimizer steps; empty means at the end of every epoch."
    )
    keep: int = Field(2, ge=1, description="How many recent checkpoints to keep (the best is kept too).")


class TrainingConfig(_Strict):
    """Fine-tuning hyper-parameters and the techniques against overfitting and forgetting."""

    epochs: float = Field(3, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    scheduler: Literal["linear", "cosine", "constant_with_warmup", "polynomial"] = "linear"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    dropout: float | None = Field(
        None, ge=0, lt=1, description="Override the model's hidden and attention dropout."
    )
    early_stopping_patience: int = Field(2, ge=1)
    refit: bool = Field(
        False,
        description="After training picks its best epoch on the validation rows, train a fresh model on"
        " the train and validation rows together for that many epochs and save that one. About twice the"
        " training time; the validation scores reported stay those of the first training.",
    )
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (smoke runs)."
    )
    seed: int = 42
    freeze_embeddings: bool = Field(False, description="Keep the embedding layer's weights fixed.")
    freeze_layers: int = Field(0, ge=0, description="Keep the lowest N encoder layers fixed.")
    gradual_unfreezing: bool = Field(
        False,
        description="Start with only the head trainable and unfreeze one more encoder layer (from the"
        " top) every epoch.",
    )
    layer_lr_decay: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Layer-wise learning-rate decay: each encoder layer below the top trains at this"
        " factor of the one above it (the embeddings below the lowest layer).",
    )
    lora: LoraConfig = LoraConfig()
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="Mixed precision: on CUDA auto is bf16 where the GPU supports it, else fp16; on CPU"
        " auto is bf16 where the CPU multiplies bf16 natively (AVX512-BF16, AMX), else fp32. fp32 turns"
        " autocast off; fp16 needs CUDA.",
    )
    compile: bool = Field(False, description="torch.compile the model (CUDA only).")
    tracking: bool = Field(
        True,
        description="Log the training (parameters, per-epoch curves, final metrics) as one MLflow run in"
        " registry.tracking_uri; false skips it.",
    )
    processes_per_node: int = Field(
        1, ge=1, description="Data-parallel training processes (DDP), one per GPU; gloo on CPU."
    )
    checkpoint: CheckpointConfig = CheckpointConfig()

    @model_validator(mode="after")
    def _one_way_to_limit_updates(self) -> TrainingConfig:
        if self.lora.enabled and (self.freeze_layers or self.freeze_embeddings or self.gradual_unfreezing):
            raise ValueError("lora.enabled trains adapters only: it excludes freeze_* and gradual_unfreezing")
        return self


class FloatRange(_Strict):
    """A continuous search range, sampled uniformly or on a log scale."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError("low must be below high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class SearchSpace(_Strict):
    """The training settings a search varies: a range, or a list of values to choose from; empty keeps
    the value of ``training``."""

    learning_rate: FloatRange | tuple[float, ...] | None = None
    batch_size: tuple[int, ...] | None = None
    epochs: tuple[float, ...] | None = None
    weight_decay: FloatRange | tuple[float, ...] | None = None
    warmup_ratio: FloatRange | tuple[float, ...] | None = None

    def varied(self) -> dict[str, FloatRange | tuple[float, ...] | tuple[int, ...]]:
        """The settings this space varies, by ``training`` field name."""
        return {name: value for name, value in self if value is not None}


class HpoConfig(_Strict):
    """Hyper-parameter search: trials of the finetune step, the best trial's model goes on."""

    enabled: bool = False
    strategy: Literal["grid", "bayesian"] = Field(
        "bayesian",
        description="grid: every combination of the listed values; bayesian: Optuna's TPE sampler,"
        " told the results of each round before it suggests the next.",
    )
    trials: int = Field(8, ge=1, description="Trials of a bayesian search (a grid runs every combination).")
    parallelism: int = Field(
        1, ge=1, description="Trials run at once on a cluster (a round); kfp.local runs them one by one."
    )
    metric: Literal["validation_macro_f1", "validation_accuracy", "validation_loss"] = "validation_macro_f1"
    seed: int = 0
    space: SearchSpace = Field(
        SearchSpace(learning_rate=FloatRange(low=1e-5, high=2e-4, log=True)),
        description="Default: the learning rate on a log scale from 1e-5 to 2e-4.",
    )

    @model_validator(mode="after")
    def _space_fits_strategy(self) -> HpoConfig:
        varied = self.space.varied()
        if not varied:
            raise ValueError("space varies nothing: give at least one setting a range or values")
        if self.strategy == "grid":
            ranges = [name for name, value in varied.items() if isinstance(value, FloatRange)]
            if ranges:
                raise ValueError(f"a grid needs lists of values, not ranges: {', '.join(ranges)}")
        return self

    def rounds(self) -> list[int]:
        """Trials per round: a grid is one round of every combination; a bayesian search asks for
        ``parallelism`` trials at a time until ``trials`` are done."""
        if self.strategy == "grid":
            size = 1
            for values in self.space.varied().values():
                size *= len(values)  # type: ignore[arg-type]
            return [size]
        full, rest = divmod(self.trials, self.parallelism)
        return [self.parallelism] * full + ([rest] if rest else [])
