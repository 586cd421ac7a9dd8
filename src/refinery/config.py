"""Typed run configuration: one YAML file describes a run, `--set a.b=c` overrides single values.

Every model is frozen and rejects unknown keys, so a mistyped key fails loudly with its dotted path
instead of being silently ignored. Locations left empty in the YAML (registry, GitOps repository,
inference log, ...) are filled in by :func:`load_config` with embedded defaults under ``state_dir``;
relative paths are made absolute against the working directory, so the resolved config can be handed
to pipeline steps running in other processes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from refinery.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SplitConfig(_Strict):
    """Seeded stratified train/validation/test split."""

    validation_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> SplitConfig:
        if self.validation_fraction + self.test_fraction >= 0.9:
            raise ValueError("validation_fraction + test_fraction must leave at least 10% for training")
        return self


Severity = Literal["error", "warning", "off"]


class Check(_Strict):
    """One rule of the data contract. ``error`` stops the run, ``warning`` is reported and the run goes
    on, ``off`` leaves the rule out of the suite."""

    severity: Severity = "error"


class ShareCheck(Check):
    """A rule each row must keep; it fails when more than ``max_share`` of the rows break it."""

    max_share: float = Field(0.0, ge=0, le=1)


class TextLengthCheck(ShareCheck):
    """Text length in characters (as read) within [min_chars, max_chars]."""

    min_chars: int = Field(1, ge=0)
    max_chars: int = Field(5000, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> TextLengthCheck:
        if self.min_chars > self.max_chars:
            raise ValueError("min_chars must not exceed max_chars")
        return self


class AlphaShareCheck(ShareCheck):
    """Letters make up at least ``min_alpha`` of each text's non-space characters: a column of
    numbers, hashes or mis-parsed bytes fails it."""

    min_alpha: float = Field(0.5, ge=0, le=1)


class MinCountCheck(Check):
    """At least ``min`` rows (overall, or per declared label)."""

    min: int = Field(1, ge=0)


class RatioCheck(Check):
    """The largest declared class has at most ``max_ratio`` times the rows of the smallest."""

    max_ratio: float = Field(10.0, ge=1)


class ValidationConfig(_Strict):
    """The data contract checked by the Great Expectations suite, one entry per rule.

    Rules that training cannot do without always stop the run: the text and label columns exist, texts
    are strings, every row has a label and every label is declared.
    """

    extra_columns: Literal["ignore", "warn", "error"] = Field(
        "warn", description="Columns other than text, label and group column: ignore, warn or error."
    )
    missing_text: ShareCheck = Field(ShareCheck(), description="Rows whose text is missing or blank.")
    text_length: TextLengthCheck = TextLengthCheck(severity="warning", min_chars=2, max_share=0.01)
    min_rows: MinCountCheck = MinCountCheck(min=100)
    min_rows_per_class: MinCountCheck = MinCountCheck(min=20)
    class_imbalance: RatioCheck = RatioCheck(severity="warning", max_ratio=10.0)
    exact_duplicates: ShareCheck = Field(
        ShareCheck(severity="error", max_share=0.2),
        description="Rows repeating an earlier row's text exactly.",
    )
    normalised_duplicates: ShareCheck = Field(
        ShareCheck(severity="warning", max_share=0.05),
        description="Rows repeating an earlier row's text once case, accents, punctuation and spacing"
        " are ignored.",
    )
    conflicting_labels: ShareCheck = Field(
        ShareCheck(severity="warning", max_share=0.0),
        description="Rows whose normalised text also occurs with another label.",
    )
    leakage: ShareCheck = Field(
        ShareCheck(severity="error", max_share=0.0),
        description="Rows of the validation or test file whose normalised text occurs in an earlier"
        " split (checked when data.validation_uri or data.test_uri is set).",
    )
    encoding_damage: ShareCheck = Field(
        ShareCheck(severity="error", max_share=0.0),
        description="Rows holding U+FFFD replacement characters or control characters.",
    )
    alphabetic: AlphaShareCheck = AlphaShareCheck(max_share=0.01)

    @model_validator(mode="before")
    @classmethod
    def _partial_rules_keep_their_defaults(cls, value: Any) -> Any:
        # `--set data.validation.text_length.severity=error` must change the severity only, not reset the
        # rule's other thresholds to the class defaults: merge a partial rule over the field's default.
        if not isinstance(value, dict):
            return value
        merged = dict(value)
        for name, given in value.items():
            info = cls.model_fields.get(name)
            if isinstance(given, dict) and info is not None and isinstance(info.default, BaseModel):
                merged[name] = {**info.default.model_dump(), **given}
        return merged


class AugmentConfig(_Strict):
    """Simple text augmentation of the training split, for small datasets."""

    enabled: bool = False
    copies: int = Field(1, ge=1, le=20, description="Augmented copies added per training row.")
    deletion_probability: float = Field(0.1, ge=0, lt=1, description="Chance to drop each word.")
    swap_probability: float = Field(
        0.1, ge=0, le=1, description="Chance, per word, to swap it with a random other word."
    )
    synonym_probability: float = Field(
        0.2, ge=0, le=1, description="Chance to replace a word that has synonyms with one of them."
    )
    synonyms: str | None = Field(
        None,
        description="Synonym file: one group of interchangeable words per line, comma-separated"
        " (# starts a comment).",
    )


class PrepareConfig(_Strict):
    """What preparation does to the validated data."""

    conflicting_labels: Literal["drop", "majority"] = Field(
        "majority",
        description="Texts seen with several labels: drop them all, or keep the majority label"
        " (dropped on a tie).",
    )
    balance: Literal["none", "class_weights", "oversample", "undersample"] = Field(
        "none",
        description="Class balance of the training split: loss weights, or resampling to the"
        " largest or smallest class.",
    )
    augment: AugmentConfig = AugmentConfig()


class DataConfig(_Strict):
    """Where the labelled data is and what it must look like."""

    uri: str = Field(
        description="Local path or fsspec URI (file://, s3://, gs://, https://) of the labelled data."
    )
    validation_uri: str | None = Field(
        None, description="A given validation split (else it is split off data.uri)."
    )
    test_uri: str | None = Field(None, description="A given test split (else it is split off data.uri).")
    retention_uri: str | None = Field(
        None,
        description="An earlier domain's labelled data (say, what the champion was trained on) both models"
        " are scored on, against catastrophic forgetting; same columns and labels as data.uri.",
    )
    incoming_uri: str | None = Field(
        None,
        description="Labelled rows a labelling tool exports (CSV, JSONL or Parquet; a file, a folder or a"
        " glob; local path or fsspec URI): new data, added to training and to the `new` test set.",
    )
    feedback: bool = Field(
        False,
        description="Add the labelled feedback the service collected (POST /feedback, stored beside"
        " serving.inference_log) as new data.",
    )
    replay_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of data.uri's training rows kept beside new labelled rows (a stratified, seeded"
        " sample); its test rows are always kept, as the `established` test set.",
    )
    new_test_fraction: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="Share of new labelled rows held out as the `new` test set, chosen by a hash of the"
        " text so that a row stays on its side run after run.",
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    encoding: str = "utf-8"
    text_column: str = "text"
    label_column: str = "label"
    group_column: str | None = Field(
        None, description="Rows sharing a value here (an author, a product) never straddle splits."
    )
    labels: tuple[str, ...] = Field(description="The declared label set, in class-index order.")
    slice_columns: tuple[str, ...] = Field(
        (),
        description="Columns (a product category, a language) the evaluation scores each value of and"
        " the gate checks slice by slice; kept in the prepared validation and test splits.",
    )
    split: SplitConfig = SplitConfig()
    validation: ValidationConfig = ValidationConfig()
    prepare: PrepareConfig = PrepareConfig()

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_strings(cls, value: Any) -> Any:
        # Labels are compared as strings everywhere: YAML `[0, 1]` and CSV `0,1` must agree.
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        return value

    @field_validator("labels")
    @classmethod
    def _at_least_two_distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < 2 or len(set(value)) != len(value):
            raise ValueError("needs at least two distinct labels")
        return value

    @model_validator(mode="after")
    def _distinct_columns(self) -> DataConfig:
        named = [
            c for c in (self.text_column, self.label_column, self.group_column, *self.slice_columns) if c
        ]
        if len(set(named)) != len(named):
            raise ValueError(
                "text_column, label_column, group_column and slice_columns must be different columns"
            )
        return self

    def split_uris(self) -> dict[str, str]:
        """The files the data comes from, by split: ``train`` always, ``validation``/``test`` when given."""
        given = {"train": self.uri, "validation": self.validation_uri, "test": self.test_uri}
        return {name: uri for name, uri in given.items() if uri}


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


# Metrics the gate's thresholds may name: higher is better for the first group, lower for the second.
HIGHER_IS_BETTER = ("accuracy", "macro_f1", "roc_auc", "average_precision")
# Measured by the serving check (refinery.packaging.check) on the packaged Bento, not by evaluate:
# only gate.max takes them.
SERVING_METRICS = ("serving_p95_ms", "serving_errors")
LOWER_IS_BETTER = ("log_loss", "ece", "mean_latency_ms", "p95_latency_ms", *SERVING_METRICS)
_SHARES = (*HIGHER_IS_BETTER, "ece")
GateMetric = Literal[
    "accuracy",
    "macro_f1",
    "roc_auc",
    "average_precision",
    "log_loss",
    "ece",
    "mean_latency_ms",
    "p95_latency_ms",
    "serving_p95_ms",
    "serving_errors",
]


def _metric_limits(**limits: float) -> dict[GateMetric, float]:
    # The names are checked by GateConfig._directions_and_ranges like any configured ones.
    return cast("dict[GateMetric, float]", dict(limits))


class SignificanceConfig(_Strict):
    """Challenger against champion beyond noise: a paired bootstrap of the macro-F1 difference and
    McNemar's test on the rows exactly one of them gets right."""

    mode: Literal["off", "not_worse", "better"] = Field(
        "better",
        description="better: accept only a challenger significantly better than the champion; not_worse:"
        " reject one significantly worse; off: skip both tests.",
    )
    on: Literal["auto", "all", "new"] = Field(
        "auto",
        description="The test rows both tests compare on: new (the held-out new labelled rows), all, or"
        " auto: new when the run has new labelled rows, else all.",
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Of the bootstrap interval.")
    resamples: int = Field(1000, ge=100, le=100_000)

    alpha: float = Field(0.05, gt=0, lt=0.5, description="McNemar's significance level.")
    seed: int = 0


class SliceRulesConfig(_Strict):
    """Per-slice non-regression: every slice (a value of a data.slice_columns column, or a text-length
    bucket) with enough test rows must not fall further behind the champion than allowed."""

    enabled: bool = True
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    min_size: int = Field(50, ge=1, description="Slices with fewer test rows are reported, not judged.")
    max_regression: float = Field(0.05, ge=0, le=1)


class RetentionRulesConfig(_Strict):
    """Against catastrophic forgetting: on data.retention_uri the challenger keeps up with the champion."""

    metric: Literal["accuracy", "macro_f1"] = "macro_f1"
    max_regression: float = Field(0.01, ge=0, le=1)


class ServingCheckConfig(_Strict):
    """The serving check after packaging (refinery.packaging.check): the Bento started as production
    starts it and loaded; gate.max.serving_p95_ms and gate.max.serving_errors judge it."""

    enabled: bool = Field(True, description="Check the packaged Bento before promoting it.")
    requests: int = Field(200, ge=1, description="Single-text requests sent after the warm-up.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    warmup: int = Field(20, ge=0, description="Requests sent first and not measured.")
    ready_timeout_s: float = Field(180, gt=0, description="Longest wait for the Bento to get ready.")
    request_timeout_s: float = Field(30, gt=0, description="Longest a request may take; longer is an error.")


class GateConfig(_Strict):
    """Promotion rules. Absolute limits judge every model; the rest compare the challenger with the
    champion on the same rows and apply only when there is a champion."""

    min: dict[GateMetric, float] = Field(
        default_factory=lambda: _metric_limits(macro_f1=0.7),
        description=f"Lowest allowed value per metric ({', '.join(HIGHER_IS_BETTER)}).",
    )
    max: dict[GateMetric, float] = Field(
        default_factory=lambda: _metric_limits(serving_errors=0),
        description=f"Highest allowed value per metric ({', '.join(LOWER_IS_BETTER)}; latency in ms;"
        " serving_* are measured by the serving check on the packaged Bento).",
    )
    max_regression: dict[GateMetric, float] = Field(
        default_factory=lambda: _metric_limits(macro_f1=0.0),
        description="How much worse than the champion the challenger may be, per metric.",
    )
    significance: SignificanceConfig = SignificanceConfig()
    slices: SliceRulesConfig = SliceRulesConfig()
    retention: RetentionRulesConfig = RetentionRulesConfig()
    serving_check: ServingCheckConfig = ServingCheckConfig()

    @model_validator(mode="after")
    def _directions_and_ranges(self) -> GateConfig:
        wrong = [f"min.{m}" for m in self.min if m not in HIGHER_IS_BETTER]
        wrong += [f"max.{m}" for m in self.max if m not in LOWER_IS_BETTER]
        wrong += [f"max_regression.{m}" for m in self.max_regression if m in SERVING_METRICS]
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)}: min takes {', '.join(HIGHER_IS_BETTER)}; max takes"
                f" {', '.join(LOWER_IS_BETTER)}"
            )
        limits = [
            (f"{name}.{metric}", value)
            for name in ("min", "max", "max_regression")
            for metric, value in getattr(self, name).items()
        ]
        # Scores and calibration error are shares (0..1); log loss and latency are only non-negative.
        bad = [key for key, value in limits if value < 0 or (value > 1 and key.split(".")[1] in _SHARES)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: out of range (0..1 for scores and ece, >= 0 otherwise)")
        return self


class EvaluationConfig(_Strict):
    """How challenger and champion are scored."""

    length_buckets: tuple[int, ...] = Field(
        (60, 200),
        description="Text-length slice edges in characters: (60, 200) makes <=60, 61-200 and >200.",
    )
    calibration_bins: int = Field(15, ge=2, le=100)
    latency_samples: int = Field(
        200, ge=0, description="Test rows predicted one at a time to measure per-example latency (0: skip)."
    )

    @field_validator("length_buckets")
    @classmethod
    def _increasing(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(b <= a for a, b in itertools.pairwise(value)) or any(v < 1 for v in value):
            raise ValueError("must be positive and strictly increasing")
        return value


class RegistryConfig(_Strict):
    """MLflow model registry; empty URIs mean a sqlite file and an artifact folder under state_dir."""

    tracking_uri: str | None = None
    artifact_location: str | None = None
    model_name: str = Field("review-sentiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    experiment: str = "refinery"


class OnnxAgreementConfig(_Strict):
    """When the int8 ONNX export may serve instead of the fp32 model: both predict the test split."""

    min_agreement: float = Field(
        0.97,
        ge=0,
        le=1,
        description="Least share of test texts on which int8 and fp32 predict the same label (int8 rounding"
        " flips texts near the decision boundary: 0.978 for an all-MiniLM-L6-v2 fine-tuned on SST-2).",
    )
    max_macro_f1_drop: float = Field(
        0.01, ge=0, le=1, description="How much lower than fp32's the int8 model's test macro-F1 may be."
    )


class PackagingConfig(_Strict):
    """BentoML packaging: the Bento is built in a scratch BentoML home and exported to ``bento_store``,
    the one place promotion and serving read it from."""

    bento_store: str | None = Field(
        None,
        description="Folder or fsspec URI (s3://bucket/bentos) the exported Bentos are stored in; empty"
        " means <state_dir>/bentos (a cluster configuration must name object storage).",
    )
    bentoml_home: str | None = Field(
        None,
        description="The BentoML home `refinery serve` imports the champion's Bento into (packaging"
        " builds in a temporary home of its own); empty means <state_dir>/bentoml (a temporary folder in"
        " a cluster configuration).",
    )
    service_dir: str = Field("serving", description="Folder holding service.py, the BentoML service.")
    runtime: Literal["torch", "onnx-int8"] = Field(
        "torch",
        description="What serves the model: torch fp32, or ONNX Runtime on a dynamically int8-quantized"
        " export, accepted only when packaging.onnx's agreement rule holds on the test split (else torch).",
    )
    onnx: OnnxAgreementConfig = OnnxAgreementConfig()


class GitOpsConfig(_Strict):
    """The repository Argo CD watches; empty means a local bare repository under state_dir, seeded from k8s/."""

    repository: str | None = None
    branch: str = "main"
    environment: str = Field("dev", pattern=r"^[a-z0-9][a-z0-9-]*$")
    seed_dir: str = Field("k8s", description="Manifests copied into a new local GitOps repository.")
    author_name: str = "refinery"
    author_email: str = "refinery@localhost"
    protected_environments: tuple[str, ...] = Field(
        (),
        description="Environments whose overlay changes go through review: a promotion there pushes a"
        " branch promote/<environment>/<model>-v<N> instead of committing to `branch`, and the"
        " environment's champion alias moves only once that change is merged (refinery models sync).",
    )
    compare_url: str | None = Field(
        None,
        description="Template of the page that compares a promotion branch with `branch`, with the"
        " placeholders {base} and {branch}, e.g. https://git.example/acme/gitops/compare/{base}...{branch};"
        " empty: derived from a GitHub or GitLab repository URL, else the merge command is shown.",
    )

    @field_validator("protected_environments")
    @classmethod
    def _environment_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not re.match(r"^[a-z0-9][a-z0-9-]*$", name)]
        if bad:
            raise ValueError(f"{bad} are not environment names (lower-case letters, digits and '-')")
        return value

    @field_validator("compare_url")
    @classmethod
    def _compare_template(cls, value: str | None) -> str | None:
        if not value:
            return None
        import string

        names = {field for _, field, _, _ in string.Formatter().parse(value) if field is not None}
        unknown = names - {"base", "branch"}
        if unknown or "branch" not in names:
            raise ValueError(
                f"{value!r} must name the branch as {{branch}} (and may name {{base}}), not {sorted(unknown)}"
            )
        return value

    def protected(self, environment: str | None = None) -> bool:
        """Whether ``environment`` (default: ``environment``) changes only through a reviewed branch."""
        return (environment or self.environment) in self.protected_environments


class ServingConfig(_Strict):
    """The BentoML service and its inference log."""

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    max_text_chars: int = Field(2000, ge=1)
    max_batch_items: int = Field(64, ge=1)
    inference_log: str | None = Field(None, description="SQLAlchemy URL; empty means sqlite under state_dir.")
    workers: int = Field(
        1,
        ge=1,
        description="Service worker processes, each with its own copy of the model; on CPU one worker using"
        " every core and batching is the fastest (bench/serve.py).",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="Threads of the model's runtime per worker; empty: the CPUs the container may use (its"
        " cgroup CPU limit, else the CPUs it may run on) divided among the workers.",
    )
    max_batch_size: int = Field(32, ge=1, le=1024, description="Most texts in one forward pass of the model.")
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="How long a forward pass that is not full waits for more texts (0: batches form only"
        " from what arrives while the model is busy, so a lone request is answered at once).",
    )
    max_queued_texts: int = Field(
        256,
        ge=1,
        description="Texts waiting for the model, at most; a request beyond it is answered 503 with"
        " Retry-After instead of waiting into a timeout.",
    )
    log_queue_rows: int = Field(
        10000,
        ge=1,
        description="Predictions waiting to be written to the inference log, at most; when it is full,"
        " requests are answered 503 with Retry-After (never answered unlogged).",
    )
    log_batch_rows: int = Field(500, ge=1, description="Most predictions written in one transaction.")
    max_request_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body accepted; a larger one is answered 413."
    )
    retry_after_s: int = Field(1, ge=1, le=300, description="The Retry-After of a 503 for overload.")


class SignalConfig(_Strict):
    """One drift signal: always computed and reported; ``fire`` lets it start a retrain."""

    fire: bool = Field(True, description="Whether this signal firing may start a retrain.")


class EmbeddingSignalConfig(SignalConfig):
    """Drift of the served model's own sentence embeddings: a domain classifier told to tell reference
    embeddings (stored with the model version) from the window's; drift when it succeeds."""

    max_auc: float = Field(
        0.55,
        gt=0.5,
        lt=1,
        description="Cross-validated ROC AUC of the domain classifier above this is drift.",
    )
    max_rows: int = Field(
        2000, ge=100, description="Rows per side the classifier sees (a seeded sample of larger sides)."
    )


class ConfidenceSignalConfig(SignalConfig):
    """Drift of the model's confidence (its top class probability) against the held-out reference."""

    fire: bool = False
    p_value: float = Field(0.01, gt=0, lt=1, description="Two-sample K-S p-value below this is drift.")


class EstimatedAccuracyConfig(SignalConfig):
    """Accuracy estimated from calibrated probabilities, without labels (confidence-based performance
    estimation); the calibration is fitted on held-out predictions at training and stored with the model."""

    max_drop: float = Field(
        0.05, ge=0, le=1, description="Estimated accuracy this far below the reference accuracy fires."
    )


class FeedbackAccuracyConfig(SignalConfig):
    """Accuracy measured on the window's predictions that received labelled feedback."""

    min_rows: int = Field(50, ge=1, description="Labelled predictions needed before it is measured.")
    max_drop: float = Field(
        0.05, ge=0, le=1, description="Measured accuracy this far below the reference accuracy fires."
    )


class SignalsConfig(_Strict):
    """The drift signals the monitor computes on each window, and which of them may fire a retrain."""

    descriptors: SignalConfig = Field(
        SignalConfig(),
        description="Surface statistics of the texts (length, punctuation, ...): monitoring.drift_share of"
        " them drifting at monitoring.stattest_threshold.",
    )
    embedding: EmbeddingSignalConfig = EmbeddingSignalConfig()
    confidence: ConfidenceSignalConfig = ConfidenceSignalConfig()
    estimated_accuracy: EstimatedAccuracyConfig = EstimatedAccuracyConfig()
    feedback_accuracy: FeedbackAccuracyConfig = FeedbackAccuracyConfig()


class MonitoringConfig(_Strict):
    """Drift detection on the inference log and the retrain trigger policy."""

    window_size: int = Field(
        500, ge=1, description="How many of the most recent predictions of the serving model form the window."
    )
    min_window_size: int = Field(50, ge=1)
    drift_share: float = Field(
        0.5, gt=0, le=1, description="Share of drifted descriptors that means descriptor drift."
    )
    stattest_threshold: float = Field(0.05, gt=0, lt=1)
    signals: SignalsConfig = SignalsConfig()
    consecutive_windows: int = Field(
        1, ge=1, description="A firing signal must have fired in this many consecutive windows."
    )
    min_labelled_rows: int = Field(
        50,
        ge=0,
        description="New labelled rows (feedback, data.incoming_uri) since the champion's training needed"
        " before a drift retrain may start: without them it would train on the same data.",
    )
    cooldown_minutes: float = Field(60, ge=0)
    retrain: bool = True
    report_dir: str | None = None
    trigger_log: str | None = Field(None, description="SQLAlchemy URL; empty means sqlite under state_dir.")


class StorageConfig(_Strict):
    """Object storage (S3 API) for s3:// data, registry artifacts and Bentos, as the AWS tools read it.

    Both values become environment variables of every step (and of refinery's own commands) unless the
    environment already sets them; the access keys come from the environment only (a Secret on a cluster).
    """

    endpoint_url: str | None = Field(
        None, description="S3 endpoint of a store other than AWS (MinIO, SeaweedFS, Ceph): AWS_ENDPOINT_URL."
    )
    region: str | None = Field(None, description="The store's region: AWS_DEFAULT_REGION.")

    def env(self) -> dict[str, str]:
        """The environment variables these settings become."""
        values = {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_DEFAULT_REGION": self.region}
        return {name: value for name, value in values.items() if value}


class KfpConfig(_Strict):
    """Where ``refinery submit`` and ``refinery schedules`` find the Kubeflow Pipelines API, and how they
    authenticate there (refinery.orchestration.kfp_api).

    The environment wins over these settings: ``REFINERY_KFP_HOST`` (or kfp's own
    ``KF_PIPELINES_ENDPOINT``) over ``host``, ``KF_PIPELINES_UI_ENDPOINT`` over ``ui_url``. No credential is
    written here: a bearer token comes from ``REFINERY_KFP_TOKEN``, or else the pod's Kubeflow Pipelines
    service-account token (the file ``KF_PIPELINES_SA_TOKEN_PATH`` names, by default
    /var/run/secrets/kubeflow/pipelines/token) when it exists.
    """

    host: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="The KFP API endpoint, e.g. http://ml-pipeline.kubeflow.svc.cluster.local:8888 (null:"
        " not configured).",
    )
    namespace: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="The Kubeflow profile namespace of a multi-user deployment (null: single-user).",
    )
    experiment: str = Field(
        "refinery", min_length=1, description="The experiment runs go to (created when missing)."
    )
    ui_url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="Base URL of the Kubeflow Pipelines UI for run links (default: the host).",
    )
    verify_ssl: bool = Field(True, description="Verify the API server's TLS certificate.")
    ca_cert: str | None = Field(
        None, description="A CA bundle file to verify the API server's certificate with."
    )
    service_account: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="The Kubernetes service account runs and recurring runs execute as (k8s/platform's"
        " refinery-pipeline; null: Kubeflow's default, pipeline-runner or default-editor).",
    )


class ImagesConfig(_Strict):
    """Where the project images live: ``<registry>/refinery:<tag>`` (every step, and the serving image)
    and ``<registry>/refinery-gpu:<tag>`` (fine-tuning). ``localhost`` is podman's local storage, not a
    registry: a cluster configuration names a registry the cluster pulls from."""

    registry: str = Field(
        "localhost",
        pattern=r"^[a-z0-9]([a-z0-9._:-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$",
        description="Registry host and path prefix, e.g. registry.acme.example/ml (refinery compile"
        " --registry overrides it).",
    )


class Toleration(_Strict):
    """A Kubernetes toleration, e.g. of the taint GPU node pools carry."""

    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class SecretEnv(_Strict):
    """An environment variable read from a Kubernetes secret (e.g. a model hub token)."""

    secret: str
    key: str
    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class ResourceProfile(_Strict):
    """Where and with what a pipeline step's pod runs on the cluster (ignored by local runs)."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    accelerator_type: str | None = Field(None, description="e.g. nvidia.com/gpu")
    accelerator_count: int = Field(0, ge=0)
    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    shm_size: str | None = Field(None, description="Size of a memory-backed /dev/shm, e.g. 8Gi.")
    checkpoint_pvc: str | None = Field(None, description="PVC mounted at training.checkpoint.dir.")
    model_cache_pvc: str | None = Field(None, description="PVC mounted at model.cache_dir.")
    secrets: tuple[SecretEnv, ...] = ()


class Credentials(_Strict):
    """Kubernetes Secrets holding the credentials of each network service, by service. Each step reads
    only the services it calls (pipelines/resources.py says which); a Secret's keys are the environment
    variable names the step reads (refinery.credentials lists them), so no value ever passes through the
    pipeline, a parameter or a log."""

    registry: str | None = Field(
        None, description="MLflow: MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN; PGPASSWORD."
    )
    object_store: str | None = Field(
        None, description="S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN)."
    )
    git: str | None = Field(
        None,
        description="GitOps remote: REFINERY_GIT_TOKEN (https) or REFINERY_GIT_SSH_KEY and"
        " REFINERY_GIT_KNOWN_HOSTS (ssh).",
    )
    container_registry: str | None = Field(
        None, description="The image registry: REFINERY_REGISTRY_USERNAME, REFINERY_REGISTRY_PASSWORD."
    )
    inference_log: str | None = Field(
        None,
        description="The inference log's database, where the data steps read the service's feedback"
        " (data.feedback): PGPASSWORD.",
    )
    pipelines: str | None = Field(
        None,
        description="The Kubeflow Pipelines API the monitoring pipeline starts retraining runs through:"
        " REFINERY_KFP_TOKEN, a bearer token (a multi-user deployment; single-user needs none).",
    )
    image_pull_secret: str | None = Field(
        None, description="A docker-registry Secret the pods pull the images with (imagePullSecrets)."
    )


class RetryPolicy(_Strict):
    """How a failed step is retried: ``count`` more attempts, waiting ``backoff_seconds`` times
    ``factor`` to the power of the attempt, for at most ``max_seconds`` from the first attempt."""

    count: int = Field(3, ge=0)
    backoff_seconds: int = Field(30, ge=1)
    factor: float = Field(2.0, ge=1)
    max_seconds: int = Field(3600, ge=1)


class EnvironmentResources(_Strict):
    """The resource profiles of one environment: fine-tuning on GPU nodes, every other step."""

    finetune: ResourceProfile = ResourceProfile()
    steps: ResourceProfile = ResourceProfile()
    finetune_retries: int = Field(
        3,
        ge=0,
        description="Retries of a failed or preempted finetune task (it resumes from its checkpoint).",
    )
    network_retries: RetryPolicy = Field(
        RetryPolicy(),
        description="Retries of every other step that calls a network service (an outage of the"
        " registry, object store, git remote or image registry).",
    )
    credentials: Credentials = Credentials()


class RunConfig(_Strict):
    """One run of the refinement loop.

    ``state_dir`` makes it an embedded configuration: every location left empty defaults to a file or
    folder under it (a sqlite registry, a local GitOps repository, ...). Without one (``state_dir: null``)
    it is a cluster configuration: each step shares nothing with another but its pipeline artifacts and
    the network services named here, so :func:`resolve` requires every service location to be a network
    service and no data to be a local path (see ARCHITECTURE.md, "The cluster contract").
    """

    task: Literal["text-classification"] = "text-classification"
    state_dir: str | None = Field(
        ".refinery",
        description="The embedded deployment's folder (registry, Bento store, GitOps repository, logs);"
        " null for a cluster configuration, which names a network service for each of them.",
    )
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    gate: GateConfig = GateConfig()
    registry: RegistryConfig = RegistryConfig()
    packaging: PackagingConfig = PackagingConfig()
    gitops: GitOpsConfig = GitOpsConfig()
    serving: ServingConfig = ServingConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    hpo: HpoConfig = HpoConfig()
    storage: StorageConfig = StorageConfig()
    images: ImagesConfig = ImagesConfig()
    kfp: KfpConfig = Field(
        KfpConfig(), description="The Kubeflow Pipelines API runs and recurring runs are submitted to."
    )
    resources: dict[str, EnvironmentResources] = Field(
        default_factory=dict,
        description="Resource profiles per environment (the key matches gitops.environment); applied"
        " to the compiled pipeline with kfp-kubernetes.",
    )

    @property
    def state(self) -> Path:
        """The embedded deployment's folder.

        Raises:
            ConfigError: This is a cluster configuration (``state_dir: null``).
        """
        if self.state_dir is None:
            raise ConfigError("state_dir is null (a cluster configuration): there is no local state folder")
        return Path(self.state_dir)

    @property
    def embedded(self) -> bool:
        """Whether this is an embedded configuration (it has a ``state_dir``)."""
        return self.state_dir is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return self.model_dump(mode="json")

    def sections(self) -> dict[str, dict[str, Any]]:
        """The sections this configuration holds, JSON-safe: all of them, or a step's (:func:`step_config`).

        Settings that are None are left out: kfp cannot pass a null inside a struct, and every setting
        of a section that may be None defaults to None, so :func:`step_config` reads them back the same.
        """
        return {
            name: getattr(self, name).model_dump(mode="json", exclude_none=True)
            for name in SECTIONS
            if not isinstance(getattr(self, name), _NotGiven)
        }

    def digest(self) -> str:
        """A stable hash of the whole configuration, recorded as lineage."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


#: The sections a pipeline step may be given (see :func:`step_config`).
SECTIONS = (
    "data",
    "model",
    "training",
    "evaluation",
    "gate",
    "registry",
    "packaging",
    "gitops",
    "serving",
    "monitoring",
    "hpo",
    "storage",
)
# What stands in for the required sections a step is not given, so that the rest validates.
_PLACEHOLDERS: dict[str, dict[str, Any]] = {
    "data": {"uri": "-", "labels": ["0", "1"]},
    "model": {"base": "-"},
}


class _NotGiven:
    """A section a pipeline step was not given: reading any of its settings is an error, never a default."""

    def __init__(self, section: str) -> None:
        self._section = section

    def __getattr__(self, name: str) -> Any:
        raise ConfigError(
            f"this pipeline step reads {self._section}.{name} but is not given the {self._section} section;"
            f" add it to the step's inputs (pipelines/training.py)"
        )


def step_config(**sections: Mapping[str, Any]) -> RunConfig:
    """The configuration of one pipeline step, made of the resolved sections it is given.

    A step's component receives only the sections it reads (so the Kubeflow UI shows them and caching
    keys on them); the rest are absent, and reading one raises instead of silently using a default.

    Raises:
        ConfigError: A section is unknown or invalid (the message names the key).
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown configuration section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}"
        )
    tree: dict[str, Any] = {name: dict(value) for name, value in sections.items()}
    for name, placeholder in _PLACEHOLDERS.items():
        tree.setdefault(name, placeholder)
    tree["state_dir"] = None
    cfg = parse_config(tree, "the step's configuration sections")
    return cfg.model_copy(update={name: _NotGiven(name) for name in SECTIONS if name not in sections})


# scheme://... (file, s3, gs, https, ssh, postgresql)
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# git's scp-like remote syntax, as git reads it: [user@]host:path, with no slash before the colon.
_SCP_LIKE = re.compile(r"^(?:[\w.-]+@)?[\w.-]+:(?!//)")


def is_uri(value: str) -> bool:
    """Whether ``value`` is a URI (``scheme://...``), not a path."""
    return bool(_URI.match(value))


def is_git_remote(location: str) -> bool:
    """Whether git takes ``location`` for a remote (a URL, or scp-like ``[user@]host:path``), not a path."""
    return "://" in location or bool(_SCP_LIKE.match(location))


def is_local(value: str) -> bool:
    """Whether ``value`` names something on this machine: a path, or a ``file://`` URI."""
    return not is_uri(value) or value.startswith("file://")


def _absolute(value: str, base: Path) -> str:
    if is_uri(value):
        return value
    # abspath, not resolve(): a symbolic link (models/all-MiniLM-L6-v2) keeps the name it was given.
    return os.path.abspath(base / Path(value).expanduser())


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _database(url: str | None) -> str:
    return (url or "").partition("://")[0].split("+")[0].lower()


# A credential written into a URL: scheme://user:password@host, or any user part of an http(s) URL (where
# git and most APIs take a bare token: https://TOKEN@host). ssh://git@host and postgresql://user@host name
# a user only.
_CREDENTIAL_IN_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s:]*:[^/@\s]+@|https?://[^/@\s]+@)", re.I)


def _leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, tree


def _cluster_problems(d: dict[str, Any]) -> list[str]:
    """What keeps a configuration without state_dir from running as separate pods (empty: nothing)."""
    # A configuration travels as a pipeline parameter, shown in the Kubeflow UI: it holds no secret.
    problems = [
        f"{key} holds a password or token; credentials come from the Secrets named in "
        "resources.<environment>.credentials"
        for key, value in _leaves(d)
        if isinstance(value, str) and _CREDENTIAL_IN_URL.match(value)
    ]
    data = d["data"]
    for key in ("uri", "validation_uri", "test_uri", "retention_uri", "incoming_uri"):
        if data[key] and is_local(data[key]):
            problems.append(f"data.{key} {data[key]!r} is a local path; a pod reads data from object storage")
    synonyms = data["prepare"]["augment"]["synonyms"]
    if synonyms and is_local(synonyms):
        problems.append(f"data.prepare.augment.synonyms {synonyms!r} is a local path")
    if is_local(d["model"]["base"]):
        problems.append(f"model.base {d['model']['base']!r} is a local path; use s3://, gs:// or hf://")
    reg = d["registry"]
    if (
        not reg["tracking_uri"]
        or _database(reg["tracking_uri"]) in {"sqlite", "file", ""}
        or is_local(reg["tracking_uri"])
    ):
        problems.append("registry.tracking_uri must name an MLflow server (http://...) or a database server")
    if reg["artifact_location"] and is_local(reg["artifact_location"]):
        problems.append("registry.artifact_location must be object storage (s3://...), not a local folder")
    store = d["packaging"]["bento_store"]
    if not store or is_local(store):
        problems.append("packaging.bento_store must be object storage (s3://bucket/bentos)")
    repo = d["gitops"]["repository"]
    if not repo or not is_git_remote(repo) or repo.startswith("file://"):
        problems.append(
            "gitops.repository must be the remote Argo CD watches (https://, ssh:// or git@host:path)"
        )
    for key, url in (
        ("serving.inference_log", d["serving"]["inference_log"]),
        ("monitoring.trigger_log", d["monitoring"]["trigger_log"]),
    ):
        if _database(url) in {"", "sqlite"}:
            problems.append(f"{key} must be a database server (postgresql+psycopg://...)")
    return problems


def resolve(config: RunConfig, base: Path | None = None) -> RunConfig:
    """Make every location concrete: relative paths absolute; in an embedded configuration, empty
    locations under ``state_dir``; in a cluster configuration, scratch folders on the step's own disk.

    Raises:
        ConfigError: A cluster configuration (``state_dir: null``) leaves a service location empty or
            names a local path where a pod needs a network service; the message lists every such field.
    """
    base = base or Path.cwd()
    d = config.to_dict()
    embedded = config.state_dir is not None
    problems = [] if embedded else _cluster_problems(d)
    if problems:
        raise ConfigError(
            "a cluster configuration (state_dir: null) shares nothing between steps but pipeline artifacts"
            " and network services:\n" + "\n".join(f"  {p}" for p in problems)
        )
    state = Path(_absolute(config.state_dir, base)) if config.state_dir is not None else None
    # A cluster configuration's scratch folders are on each step's own disk, never shared.
    scratch = state if state is not None else Path(tempfile.gettempdir()) / "refinery"

    def local_default(value: str | None, name: str) -> str:
        return _absolute(value or str(scratch / name), base)

    if state is not None:
        d["state_dir"] = str(state)
    data = d["data"]
    for key in ("uri", "validation_uri", "test_uri", "retention_uri", "incoming_uri"):
        if data[key]:
            data[key] = _absolute(data[key], base)
    augment = data["prepare"]["augment"]
    if augment["synonyms"]:
        augment["synonyms"] = _absolute(augment["synonyms"], base)
    d["model"]["base"] = _absolute(d["model"]["base"], base)
    d["model"]["cache_dir"] = local_default(d["model"]["cache_dir"], "model-cache")
    checkpoint = d["training"]["checkpoint"]
    checkpoint["dir"] = local_default(checkpoint["dir"], "checkpoints")
    pkg = d["packaging"]
    pkg["bentoml_home"] = local_default(pkg["bentoml_home"], "bentoml")
    pkg["service_dir"] = _absolute(pkg["service_dir"], base)
    git = d["gitops"]
    git["seed_dir"] = _absolute(git["seed_dir"], base)
    mon = d["monitoring"]
    mon["report_dir"] = local_default(mon["report_dir"], "monitoring")
    reg = d["registry"]
    if state is not None:
        reg["tracking_uri"] = reg["tracking_uri"] or _sqlite_url(state / "mlflow.db")
        reg["artifact_location"] = _absolute(reg["artifact_location"] or str(state / "mlartifacts"), base)
        pkg["bento_store"] = _absolute(pkg["bento_store"] or str(state / "bentos"), base)
        repository = git["repository"] or str(state / "gitops.git")
        git["repository"] = repository if is_git_remote(repository) else _absolute(repository, base)
        d["serving"]["inference_log"] = d["serving"]["inference_log"] or _sqlite_url(state / "inference.db")
        mon["trigger_log"] = mon["trigger_log"] or _sqlite_url(state / "triggers.db")
    return RunConfig.model_validate(d)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {path}: {msg}")
    return f"invalid configuration in {source}:\n" + "\n".join(lines)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


class _ConfigLoader(yaml.SafeLoader):
    """YAML as a configuration is written: only ``true``/``false`` are booleans. YAML 1.1, which PyYAML
    follows, also reads ``on``/``off``/``yes``/``no`` as booleans, which turns ``severity: off`` into
    false and the key of ``significance: {on: new}`` into true."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: plain data only


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a raw config tree; values are parsed as YAML scalars or lists."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.epochs=2")
        try:
            value = _yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML: {exc}") from exc
        _set_dotted(tree, key.strip(), value)
    return tree


def parse_config(tree: dict[str, Any], source: str = "<config>") -> RunConfig:
    """Validate a raw config tree, turning pydantic errors into a ConfigError naming each dotted path."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def _tree(text: str, source: str) -> dict[str, Any]:
    try:
        tree = _yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    return tree


def load_config(path: str | Path, overrides: list[str] | None = None, base: Path | None = None) -> RunConfig:
    """Read a YAML run configuration, apply ``--set`` overrides, validate and resolve it.

    Args:
        path: The YAML file.
        overrides: ``dotted.key=value`` strings applied after reading the file.
        base: Directory that relative paths are resolved against (default: the working directory).

    Raises:
        ConfigError: The file is missing or not YAML, or a key is unknown or mistyped.
    """
    return resolve(read_config(path, overrides), base)


def read_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read and validate a YAML run configuration with ``--set`` overrides, without resolving it.

    Raises:
        ConfigError: The file is missing or not YAML, or a key is unknown or mistyped.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    tree = apply_overrides(_tree(text, str(path)), overrides or [])
    return parse_config(tree, str(path))


#: The settings a pipeline run takes as typed parameters (the Kubeflow UI's run form): parameter name
#: -> dotted configuration key. They are applied on top of the ``config`` parameter.
RUN_PARAMETERS: dict[str, str] = {
    "data_uri": "data.uri",
    "test_uri": "data.test_uri",
    "epochs": "training.epochs",
    "learning_rate": "training.learning_rate",
    "environment": "gitops.environment",
}
#: Settings fixed when the pipeline is compiled (they shape the pods, not the run), and where it is
#: submitted (kfp): left out of the ``config`` parameter.
COMPILE_TIME_SECTIONS = ("resources", "images", "storage", "kfp")


def _dotted(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def run_parameters(cfg: RunConfig) -> dict[str, Any]:
    """The typed pipeline parameters of ``cfg``, as the run form shows them (an empty test URI: none)."""
    tree = cfg.to_dict()
    values = {name: _dotted(tree, key) for name, key in RUN_PARAMETERS.items()}
    values["test_uri"] = values["test_uri"] or ""
    values["epochs"] = float(values["epochs"])
    return values


def _difference(value: Any, default: Any) -> Any:
    """The parts of a JSON tree that differ from ``default`` (nested mappings compared key by key)."""
    if not (isinstance(value, dict) and isinstance(default, dict)):
        return value
    changed = {}
    for key, item in value.items():
        if key not in default:
            changed[key] = item
        elif item != default[key]:
            changed[key] = _difference(item, default[key])
    return changed


def config_text(cfg: RunConfig) -> str:
    """The ``config`` pipeline parameter: ``cfg`` without the settings at their defaults, the typed run
    parameters or the compile-time sections, so that the run form shows what is particular to this
    configuration (a few hundred bytes instead of the whole tree).

    A section is shortened only where the shortened form reads back to the same section (a rule whose
    default differs from its class's, such as ``data.validation.text_length``, would not); otherwise it
    is kept whole. It is written as JSON on one line (JSON is YAML): kfp writes each parameter's default
    into a comment line at the top of the compiled file, and a default spanning lines would break out of
    it.
    """
    full = cfg.model_dump(mode="json")
    required = {
        "data": {k: full["data"][k] for k in ("uri", "labels")},
        "model": {"base": full["model"]["base"]},
    }
    default = RunConfig.model_validate(required).model_dump(mode="json")
    tree: dict[str, Any] = {}
    for name, value in full.items():
        # The required keys always go in: a section holding nothing else equals the default built from them.
        if name in COMPILE_TIME_SECTIONS or (value == default[name] and name not in required):
            continue
        short = _difference(value, default[name])
        if isinstance(short, dict):
            short = {**required.get(name, {}), **short}
            probe = parse_config({**required, name: short}, "the configuration parameter")
            if getattr(probe, name) != getattr(cfg, name):
                short = value
        tree[name] = short
    for key in RUN_PARAMETERS.values():
        section, _, field = key.rpartition(".")
        tree.get(section, {}).pop(field, None)
    return json.dumps(tree, separators=(",", ":"))


def config_for_run(config: str, parameters: Mapping[str, Any], base: Path | None = None) -> RunConfig:
    """The configuration a pipeline run uses: the ``config`` parameter with the typed parameters on top.

    Args:
        config: YAML text, or the URI of a YAML file (``s3://``, ``https://``, an absolute path; read
            through fsspec).
        parameters: Values of :data:`RUN_PARAMETERS` (an empty ``test_uri`` means none).
        base: Directory relative paths are resolved against (default: the working directory).

    Raises:
        ConfigError: The file cannot be read, is not YAML or is not a valid configuration; a cluster
            configuration names a local path (see :func:`resolve`).
    """
    tree, source = _parameter_tree(config)
    for name, key in RUN_PARAMETERS.items():
        if name in parameters:
            value = parameters[name]
            _set_dotted(tree, key, None if name == "test_uri" and not value else value)
    return resolve(parse_config(tree, source), base)


def _parameter_tree(config: str) -> tuple[dict[str, Any], str]:
    """The raw tree of a ``config`` pipeline parameter (YAML text, or the URI of a YAML file) and the
    name errors give it."""
    source = "pipeline parameter 'config'"
    text = config
    stripped = config.strip()
    if "\n" not in stripped and (is_uri(stripped) or stripped.startswith("/")):
        import fsspec

        source = stripped
        try:
            with fsspec.open(stripped, "r", encoding="utf-8") as fh:
                text = fh.read()
        except Exception as exc:  # fsspec back-ends raise their own errors (FileNotFoundError, ClientError)
            raise ConfigError(
                f"cannot read the configuration {stripped}: {type(exc).__name__}: {exc}"
            ) from None
    return _tree(text, source), source


def config_from_parameter(config: str) -> RunConfig:
    """A whole configuration handed to a pipeline as one parameter (:func:`config_as_written`, or the
    URI of a YAML file), validated but not resolved.

    Raises:
        ConfigError: The file cannot be read, is not YAML or is not a valid configuration.
    """
    tree, source = _parameter_tree(config)
    return parse_config(tree, source)


def config_as_written(cfg: RunConfig) -> str:
    """``cfg`` whole, compile-time sections included, as the settings it was given (the defaults left
    out), on one line of JSON: the parameter of a pipeline that compiles another one from it."""
    return json.dumps(cfg.model_dump(mode="json", exclude_unset=True), separators=(",", ":"))


def json_schema() -> dict[str, Any]:
    """The JSON schema of a run configuration."""
    return RunConfig.model_json_schema()
