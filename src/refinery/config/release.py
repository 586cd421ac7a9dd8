"""The sections that judge and ship a model: ``evaluation``, ``gate``, ``registry``, ``packaging``
and ``gitops``."""

from __future__ import annotations

import itertools
import re
from typing import Literal, cast

from pydantic import Field, field_validator, model_validator

from refinery.config._base import _Strict

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
