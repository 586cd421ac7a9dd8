"""Names of the Prometheus series the serving process adds to BentoML's own on /metrics.

The service (serving/service.py) creates them through ``bentoml.metrics`` (multiprocess-safe); the alerts
(k8s/platform/prometheusrule.yaml) and the Grafana dashboard (k8s/platform/grafana-dashboard.json) query
them, and a test checks that every refinery series they name is one of these.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Histogram (seconds) of the time a request spends in the service, queueing and logging included;
#: label ``endpoint`` ("/classify", "/feedback").
REQUEST_DURATION = "refinery_request_duration_seconds"
#: Histogram of the number of texts in each forward pass of the model (the batcher's batch sizes).
BATCH_SIZE = "refinery_batch_size"
#: Counter of predictions answered, per predicted ``label``.
PREDICTIONS = "refinery_predictions"
#: Counter of failed inference-log writes (the rows stay queued and are written again); label
#: ``endpoint``: "/classify" for predictions, "/feedback" for labels.
LOG_WRITE_FAILURES = "refinery_inference_log_write_failures"
#: Gauge of prediction rows waiting to be written to the inference log (all workers of a pod summed).
LOG_QUEUE_ROWS = "refinery_inference_log_queue_rows"
#: Counter of requests refused before any work, label ``reason``: "overloaded" (503, Retry-After) or
#: "too_large" (413); label ``endpoint``.
REJECTED = "refinery_requests_rejected"
#: Gauge, 1 for the model this process serves; labels ``model_name``, ``model_version``, ``runtime``.
MODEL_INFO = "refinery_model_info"

#: Every series name as it appears on /metrics (prometheus_client appends ``_total`` to counters, and
#: ``_bucket``/``_sum``/``_count`` to histograms).
EXPOSED = (
    f"{REQUEST_DURATION}_bucket",
    f"{REQUEST_DURATION}_sum",
    f"{REQUEST_DURATION}_count",
    f"{BATCH_SIZE}_bucket",
    f"{BATCH_SIZE}_sum",
    f"{BATCH_SIZE}_count",
    f"{PREDICTIONS}_total",
    f"{LOG_WRITE_FAILURES}_total",
    LOG_QUEUE_ROWS,
    f"{REJECTED}_total",
    MODEL_INFO,
)

#: Request-duration buckets (seconds); 0.5 s and 1 s are bounds, so alerts at those latencies are exact.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_created: PrometheusHooks | None = None


class PrometheusHooks:
    """The series above, fed by :class:`refinery.serving.ClassificationService` (its ``hooks``).

    Build it with :func:`prometheus_hooks` inside the serving worker: BentoML sets the Prometheus
    multiprocess directory when a worker starts, after the service module is imported, and series made
    before would not reach /metrics.
    """

    def __init__(self) -> None:
        import prometheus_client as prom

        self.duration = prom.Histogram(
            REQUEST_DURATION,
            "Time a request spent in the service, queueing and logging included.",
            ["endpoint"],
            buckets=DURATION_BUCKETS,
        )
        self.batch_size = prom.Histogram(
            BATCH_SIZE, "Texts in each forward pass of the model.", buckets=BATCH_BUCKETS
        )
        self.predictions = prom.Counter(PREDICTIONS, "Predictions answered, per predicted label.", ["label"])
        self.log_failures = prom.Counter(
            LOG_WRITE_FAILURES,
            "Failed inference-log writes; the rows stay queued and are written again.",
            ["endpoint"],
        )
        self.log_queue_rows = prom.Gauge(
            LOG_QUEUE_ROWS,
            "Predictions waiting to be written to the inference log.",
            multiprocess_mode="livesum",
        )
        self.rejected_requests = prom.Counter(
            REJECTED,
            "Requests refused before any work (overloaded: 503; too_large: 413).",
            ["endpoint", "reason"],
        )
        self.model_info = prom.Gauge(
            MODEL_INFO,
            "1 for the model this process serves.",
            ["model_name", "model_version", "runtime"],
            multiprocess_mode="max",
        )

    def serving(self, model_name: str, model_version: str, runtime: str, labels: tuple[str, ...]) -> None:
        """Announce the served model and show every per-label and per-endpoint series at 0."""
        self.model_info.labels(model_name=model_name, model_version=model_version, runtime=runtime).set(1)
        for label in labels:
            self.predictions.labels(label=label)
        for endpoint in ("/classify", "/feedback"):
            self.log_failures.labels(endpoint=endpoint)
            for reason in ("overloaded", "too_large"):
                self.rejected_requests.labels(endpoint=endpoint, reason=reason)

    def batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def predicted(self, labels: Sequence[str]) -> None:
        for label in labels:
            self.predictions.labels(label=label).inc()

    def log_write_failed(self, endpoint: str) -> None:
        self.log_failures.labels(endpoint=endpoint).inc()

    def log_queue(self, rows: int) -> None:
        self.log_queue_rows.set(rows)

    def rejected(self, endpoint: str, reason: str) -> None:
        self.rejected_requests.labels(endpoint=endpoint, reason=reason).inc()

    def request_took(self, endpoint: str, seconds: float) -> None:
        self.duration.labels(endpoint=endpoint).observe(seconds)


def prometheus_hooks() -> PrometheusHooks:
    """The process's one :class:`PrometheusHooks` (a series can be registered once per process)."""
    global _created
    if _created is None:
        _created = PrometheusHooks()
    return _created
