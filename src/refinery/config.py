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
import re
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
LOWER_IS_BETTER = ("log_loss", "ece", "mean_latency_ms", "p95_latency_ms")
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
]


def _metric_limits(**limits: float) -> dict[GateMetric, float]:
    # The names are checked by GateConfig._directions_and_ranges like any configured ones.
    return cast("dict[GateMetric, float]", dict(limits))


class SignificanceConfig(_Strict):
    """Challenger against champion beyond noise: a paired bootstrap of the macro-F1 difference and
    McNemar's test on the rows exactly one of them gets right."""

    mode: Literal["off", "not_worse", "better"] = Field(
        "not_worse",
        description="not_worse: reject a challenger significantly worse than the champion; better: accept"
        " only one significantly better; off: skip both tests.",
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


class GateConfig(_Strict):
    """Promotion rules. Absolute limits judge every model; the rest compare the challenger with the
    champion on the same rows and apply only when there is a champion."""

    min: dict[GateMetric, float] = Field(
        default_factory=lambda: _metric_limits(macro_f1=0.7),
        description=f"Lowest allowed value per metric ({', '.join(HIGHER_IS_BETTER)}).",
    )
    max: dict[GateMetric, float] = Field(
        default_factory=dict,
        description=f"Highest allowed value per metric ({', '.join(LOWER_IS_BETTER)}; latency in ms).",
    )
    max_regression: dict[GateMetric, float] = Field(
        default_factory=lambda: _metric_limits(macro_f1=0.0),
        description="How much worse than the champion the challenger may be, per metric.",
    )
    significance: SignificanceConfig = SignificanceConfig()
    slices: SliceRulesConfig = SliceRulesConfig()
    retention: RetentionRulesConfig = RetentionRulesConfig()

    @model_validator(mode="after")
    def _directions_and_ranges(self) -> GateConfig:
        wrong = [f"min.{m}" for m in self.min if m not in HIGHER_IS_BETTER]
        wrong += [f"max.{m}" for m in self.max if m not in LOWER_IS_BETTER]
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


class PackagingConfig(_Strict):
    """BentoML packaging; an empty home means a BentoML store under state_dir."""

    bentoml_home: str | None = None
    service_dir: str = Field("serving", description="Folder holding service.py, the BentoML service.")


class GitOpsConfig(_Strict):
    """The repository Argo CD watches; empty means a local bare repository under state_dir, seeded from k8s/."""

    repository: str | None = None
    branch: str = "main"
    environment: str = Field("dev", pattern=r"^[a-z0-9][a-z0-9-]*$")
    seed_dir: str = Field("k8s", description="Manifests copied into a new local GitOps repository.")
    image_repository: str = "localhost/refinery-serving"
    author_name: str = "refinery"
    author_email: str = "refinery@localhost"


class ServingConfig(_Strict):
    """The BentoML service and its inference log."""

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    max_text_chars: int = Field(2000, ge=1)
    max_batch_items: int = Field(64, ge=1)
    inference_log: str | None = Field(None, description="SQLAlchemy URL; empty means sqlite under state_dir.")


class MonitoringConfig(_Strict):
    """Drift detection on the inference log and the retrain trigger."""

    window_size: int = Field(
        500, ge=1, description="How many of the most recent predictions form the window."
    )
    min_window_size: int = Field(50, ge=1)
    drift_share: float = Field(
        0.5, gt=0, le=1, description="Share of drifted features that means dataset drift."
    )
    stattest_threshold: float = Field(0.05, gt=0, lt=1)
    cooldown_minutes: float = Field(60, ge=0)
    retrain: bool = True
    report_dir: str | None = None
    trigger_log: str | None = Field(None, description="SQLAlchemy URL; empty means sqlite under state_dir.")


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


class EnvironmentResources(_Strict):
    """The resource profiles of one environment: fine-tuning on GPU nodes, every other step."""

    finetune: ResourceProfile = ResourceProfile()
    steps: ResourceProfile = ResourceProfile()
    finetune_retries: int = Field(
        3,
        ge=0,
        description="Retries of a failed or preempted finetune task (it resumes from its checkpoint).",
    )


class RunConfig(_Strict):
    """One run of the refinement loop."""

    task: Literal["text-classification"] = "text-classification"
    state_dir: str = ".refinery"
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
    resources: dict[str, EnvironmentResources] = Field(
        default_factory=dict,
        description="Resource profiles per environment (the key matches gitops.environment); applied"
        " to the compiled pipeline with kfp-kubernetes.",
    )

    @property
    def state(self) -> Path:
        return Path(self.state_dir)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """The form pipeline steps receive (a KFP string parameter: it keeps nulls and integers intact).

        kfp.local's subprocess runner rewrites every "python3" in a step's arguments to its interpreter's
        path, values included (kfp 2.17), which corrupts paths such as .venv/lib/python3.11/...; a JSON
        escape of one letter keeps the text equal after decoding while hiding it from that rewrite.
        """
        return json.dumps(self.to_dict(), sort_keys=True).replace("python3", "pytho\\u006e3")

    def digest(self) -> str:
        """A stable hash of the whole configuration, recorded as lineage."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# scheme://... (file, s3, gs, https, ssh, postgresql) or git's scp-like user@host:path
_URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://|[\w.-]+@[\w.-]+:)")


def _is_uri(value: str) -> bool:
    return bool(_URI.match(value))


def _absolute(value: str, base: Path) -> str:
    if _is_uri(value):
        return value
    return str((base / Path(value).expanduser()).resolve())


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def resolve(config: RunConfig, base: Path | None = None) -> RunConfig:
    """Make every location concrete: relative paths absolute, empty locations under ``state_dir``."""
    base = base or Path.cwd()
    state = Path(_absolute(config.state_dir, base))
    d = config.to_dict()
    d["state_dir"] = str(state)
    data = d["data"]
    for key in ("uri", "validation_uri", "test_uri", "retention_uri"):
        if data[key]:
            data[key] = _absolute(data[key], base)
    augment = data["prepare"]["augment"]
    if augment["synonyms"]:
        augment["synonyms"] = _absolute(augment["synonyms"], base)
    d["model"]["base"] = _absolute(d["model"]["base"], base)
    d["model"]["cache_dir"] = _absolute(d["model"]["cache_dir"] or str(state / "model-cache"), base)
    checkpoint = d["training"]["checkpoint"]
    checkpoint["dir"] = _absolute(checkpoint["dir"] or str(state / "checkpoints"), base)
    reg = d["registry"]
    reg["tracking_uri"] = reg["tracking_uri"] or _sqlite_url(state / "mlflow.db")
    reg["artifact_location"] = _absolute(reg["artifact_location"] or str(state / "mlartifacts"), base)
    pkg = d["packaging"]
    pkg["bentoml_home"] = _absolute(pkg["bentoml_home"] or str(state / "bentoml"), base)
    pkg["service_dir"] = _absolute(pkg["service_dir"], base)
    git = d["gitops"]
    git["repository"] = _absolute(git["repository"] or str(state / "gitops.git"), base)
    git["seed_dir"] = _absolute(git["seed_dir"], base)
    d["serving"]["inference_log"] = d["serving"]["inference_log"] or _sqlite_url(state / "inference.db")
    mon = d["monitoring"]
    mon["report_dir"] = _absolute(mon["report_dir"] or str(state / "monitoring"), base)
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


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a raw config tree; values are parsed as YAML scalars or lists."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.epochs=2")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
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


def load_config(path: str | Path, overrides: list[str] | None = None, base: Path | None = None) -> RunConfig:
    """Read a YAML run configuration, apply ``--set`` overrides, validate and resolve it.

    Args:
        path: The YAML file.
        overrides: ``dotted.key=value`` strings applied after reading the file.
        base: Directory that relative paths are resolved against (default: the working directory).

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
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    tree = apply_overrides(tree, overrides or [])
    return resolve(parse_config(tree, str(path)), base)


def from_dict(tree: dict[str, Any] | str) -> RunConfig:
    """Rebuild a resolved config handed to a pipeline step (as a dict or its JSON text)."""
    if isinstance(tree, str):
        try:
            tree = json.loads(tree)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"pipeline parameter 'config' is not JSON: {exc}") from None
        if not isinstance(tree, dict):
            raise ConfigError("pipeline parameter 'config' must be a JSON object")
    return parse_config(tree, "pipeline parameter 'config'")


def json_schema() -> dict[str, Any]:
    """The JSON schema of a run configuration."""
    return RunConfig.model_json_schema()
