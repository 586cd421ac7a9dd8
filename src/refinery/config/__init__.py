"""Typed run configuration: one YAML file describes a run, `--set a.b=c` overrides single values.

Every model is frozen and rejects unknown keys, so a mistyped key fails loudly with its dotted path
instead of being silently ignored; rules that relate settings of different sections are checked when the
configuration is loaded, and name the dotted paths they relate. Locations left empty in the YAML
(registry, GitOps repository, inference log, ...) are filled in by :func:`load_config` with embedded
defaults under ``state_dir``; relative paths are made absolute against the working directory, so the
resolved config can be handed to pipeline steps running in other processes.

The package, by seam:

* the sections' models: :mod:`.data`, :mod:`.training` (model, training, hpo), :mod:`.release`
  (evaluation, gate, registry, packaging, gitops), :mod:`.operations` (serving, monitoring),
  :mod:`.cluster` (storage, kfp, images, resources);
* :mod:`.run`: :class:`RunConfig`, the whole, and the cross-section rules;
* :mod:`.locations`: :data:`LOCATIONS`, the one list of the settings that name a place, and
  :func:`resolve`, which makes them concrete (and refuses a cluster configuration that names a local
  one);
* :mod:`.loading`: YAML, ``--set`` overrides, the pipeline's parameters, a step's configuration.

Every name callers use is importable from ``refinery.config``.
"""

from refinery.config.cluster import (
    Credentials,
    EnvironmentResources,
    ImagesConfig,
    KfpConfig,
    ResourceProfile,
    RetryPolicy,
    SecretEnv,
    StorageConfig,
    Toleration,
    pvc_problems,
)
from refinery.config.data import (
    AlphaShareCheck,
    AugmentConfig,
    Check,
    DataConfig,
    MinCountCheck,
    PrepareConfig,
    RatioCheck,
    Severity,
    ShareCheck,
    SplitConfig,
    TextLengthCheck,
    ValidationConfig,
)
from refinery.config.loading import (
    COMPILE_TIME_SECTIONS,
    RUN_PARAMETERS,
    apply_overrides,
    config_as_written,
    config_for_run,
    config_from_parameter,
    config_text,
    json_schema,
    load_config,
    parse_config,
    read_config,
    run_parameters,
    step_config,
)
from refinery.config.locations import (
    LOCATIONS,
    Location,
    LocationKind,
    is_git_remote,
    is_local,
    is_uri,
    locations,
    resolve,
)
from refinery.config.operations import (
    ConfidenceSignalConfig,
    EmbeddingSignalConfig,
    EstimatedAccuracyConfig,
    FeedbackAccuracyConfig,
    MonitoringConfig,
    ServingConfig,
    SignalConfig,
    SignalsConfig,
)
from refinery.config.release import (
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    SERVING_METRICS,
    EvaluationConfig,
    GateConfig,
    GateMetric,
    GitOpsConfig,
    OnnxAgreementConfig,
    PackagingConfig,
    RegistryConfig,
    RetentionRulesConfig,
    ServingCheckConfig,
    SignificanceConfig,
    SliceRulesConfig,
)
from refinery.config.run import (
    CROSS_SECTION_RULES,
    SECTIONS,
    RunConfig,
)
from refinery.config.training import (
    CheckpointConfig,
    FloatRange,
    HpoConfig,
    LoraConfig,
    ModelConfig,
    SearchSpace,
    TrainingConfig,
)

__all__ = [
    "COMPILE_TIME_SECTIONS",
    "CROSS_SECTION_RULES",
    "HIGHER_IS_BETTER",
    "LOCATIONS",
    "LOWER_IS_BETTER",
    "RUN_PARAMETERS",
    "SECTIONS",
    "SERVING_METRICS",
    "AlphaShareCheck",
    "AugmentConfig",
    "Check",
    "CheckpointConfig",
    "ConfidenceSignalConfig",
    "Credentials",
    "DataConfig",
    "EmbeddingSignalConfig",
    "EnvironmentResources",
    "EstimatedAccuracyConfig",
    "EvaluationConfig",
    "FeedbackAccuracyConfig",
    "FloatRange",
    "GateConfig",
    "GateMetric",
    "GitOpsConfig",
    "HpoConfig",
    "ImagesConfig",
    "KfpConfig",
    "Location",
    "LocationKind",
    "LoraConfig",
    "MinCountCheck",
    "ModelConfig",
    "MonitoringConfig",
    "OnnxAgreementConfig",
    "PackagingConfig",
    "PrepareConfig",
    "RatioCheck",
    "RegistryConfig",
    "ResourceProfile",
    "RetentionRulesConfig",
    "RetryPolicy",
    "RunConfig",
    "SearchSpace",
    "SecretEnv",
    "ServingCheckConfig",
    "ServingConfig",
    "Severity",
    "ShareCheck",
    "SignalConfig",
    "SignalsConfig",
    "SignificanceConfig",
    "SliceRulesConfig",
    "SplitConfig",
    "StorageConfig",
    "TextLengthCheck",
    "Toleration",
    "TrainingConfig",
    "ValidationConfig",
    "apply_overrides",
    "config_as_written",
    "config_for_run",
    "config_from_parameter",
    "config_text",
    "is_git_remote",
    "is_local",
    "is_uri",
    "json_schema",
    "load_config",
    "locations",
    "parse_config",
    "pvc_problems",
    "read_config",
    "resolve",
    "run_parameters",
    "step_config",
]
