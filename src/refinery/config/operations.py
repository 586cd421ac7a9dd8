"""The sections of a served model: ``serving`` (the service and its inference log) and
``monitoring`` (drift signals and the retrain policy)."""

from __future__ import annotations

from pydantic import Field

from refinery.config._base import _Strict


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
