"""refinery.serving without BentoML: request checks, predict-and-log, feedback, settings, the serve command."""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from refinery.errors import ConfigError
from refinery.monitoring.inference_log import InferenceLog, InvalidFeedback
from refinery.serving import (
    ENV_INFERENCE_LOG,
    ENV_MAX_BATCH_ITEMS,
    ENV_MAX_LENGTH,
    ENV_MAX_TEXT_CHARS,
    MODEL_LABEL_NAME,
    MODEL_LABEL_VERSION,
    Classification,
    ClassificationService,
    InvalidRequest,
    ServiceSettings,
    serve_command,
    validate_texts,
)

LABELS = ("negative", "positive")


def classify(service: ClassificationService, texts: object) -> list[Classification]:
    """One request to the service, and its predictions written to the inference log."""
    results = asyncio.run(service.classify(texts))
    assert service.writer.flush(timeout_s=30)
    return results


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ("", "texts is blank"),
        ("  \n\t", "texts is blank"),
        ([], "texts is an empty list"),
        (["fine", 3], r"texts\[1\] is int, expected a string"),
        (["fine", None], r"texts\[1\] is NoneType"),
        (["fine", " "], r"texts\[1\] is blank"),
        ("x" * 11, r"texts has 11 characters; the limit is 10 \(serving.max_text_chars\)"),
        (["ok", "y" * 12], r"texts\[1\] has 12 characters; the limit is 10"),
        (["a"] * 4, r"texts has 4 items; at most 3 are accepted per request \(serving.max_batch_items\)"),
        (42, "texts must be a string or a list of strings, got int"),
        ({"text": "a"}, "got dict"),
    ],
)
def test_malformed_texts_are_rejected_with_the_reason(texts: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        validate_texts(texts, max_text_chars=10, max_batch_items=3)


def test_valid_texts_become_a_list() -> None:
    assert validate_texts("good", 10, 3) == ["good"]
    assert validate_texts(["a", "b c", "x" * 10], 10, 3) == ["a", "b c", "x" * 10]


def test_settings_round_trip_through_the_environment(make_config: Callable[..., object]) -> None:
    cfg = make_config(["serving.max_text_chars=123", "serving.max_batch_items=7"])
    settings = ServiceSettings.from_config(cfg)
    env = settings.to_env()
    assert env[ENV_INFERENCE_LOG] == cfg.serving.inference_log
    assert (env[ENV_MAX_TEXT_CHARS], env[ENV_MAX_BATCH_ITEMS], env[ENV_MAX_LENGTH]) == ("123", "7", "64")
    assert ServiceSettings.from_env(env) == settings


def test_settings_defaults_when_only_the_log_is_set() -> None:
    settings = ServiceSettings.from_env({ENV_INFERENCE_LOG: "sqlite:////tmp/x.db"})
    assert (settings.max_text_chars, settings.max_batch_items, settings.max_length) == (2000, 64, None)


def test_settings_name_the_variable_at_fault() -> None:
    with pytest.raises(ConfigError, match=ENV_INFERENCE_LOG):
        ServiceSettings.from_env({})
    with pytest.raises(ConfigError, match=f"{ENV_MAX_BATCH_ITEMS}='many' is not an integer"):
        ServiceSettings.from_env({ENV_INFERENCE_LOG: "sqlite://", ENV_MAX_BATCH_ITEMS: "many"})
    with pytest.raises(ConfigError, match=f"{ENV_MAX_TEXT_CHARS}='0' must be at least 1"):
        ServiceSettings.from_env({ENV_INFERENCE_LOG: "sqlite://", ENV_MAX_TEXT_CHARS: "0"})


def test_serve_command_runs_bentoml_with_the_resolved_settings(make_config: Callable[..., object]) -> None:
    cfg = make_config(["serving.port=3999", "serving.host=0.0.0.0"])
    argv, env = serve_command(cfg, "review-sentiment-test-service:abc123")
    # This interpreter's BentoML (the one the project pins), not whatever `bentoml` is on PATH.
    assert argv[:3] == [sys.executable, "-m", "bentoml"]
    # What matters is the command, the Bento and where it listens, whatever the order of the flags.
    assert argv[3] == "serve" and "review-sentiment-test-service:abc123" in argv[4:]
    flags = dict(itertools.pairwise(argv))
    assert (flags["--host"], flags["--port"]) == ("0.0.0.0", "3999")
    assert env["BENTOML_HOME"] == cfg.packaging.bentoml_home
    assert env[ENV_INFERENCE_LOG] == cfg.serving.inference_log
    assert env[ENV_MAX_TEXT_CHARS] == str(cfg.serving.max_text_chars)
    with pytest.raises(ConfigError, match="name:version"):
        serve_command(cfg, "no-version")


def test_classify_predicts_and_logs_every_text(
    make_config: Callable[..., object], tiny_model_dir: Path
) -> None:
    cfg = make_config(["serving.max_batch_items=4"])
    service = ClassificationService.load(
        tiny_model_dir, "review-sentiment-test", "5", ServiceSettings.from_config(cfg)
    )
    assert service.labels == LABELS

    results = classify(service, ["great value, works well", "broke after a day"])
    single = classify(service, "arrived on time")

    assert len(results) == 2
    assert len(single) == 1
    for r in [*results, *single]:
        assert r.label in LABELS
        assert set(r.scores) == set(LABELS)
        assert sum(r.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert r.label == max(r.scores, key=r.scores.get)
        assert r.model_version == "5"
        assert r.to_dict() == {
            "label": r.label,
            "scores": r.scores,
            "model_version": "5",
            "prediction_id": r.prediction_id,
        }

    log = InferenceLog(cfg.serving.inference_log)
    assert log.count() == 3
    logged = log.recent(3)
    assert list(logged["text"]) == ["great value, works well", "broke after a day", "arrived on time"]
    assert list(logged["label"]) == [r.label for r in [*results, *single]]
    assert set(logged["model_name"]) == {"review-sentiment-test"}
    assert set(logged["model_version"]) == {"5"}
    assert list(logged["prediction_id"]) == [r.prediction_id for r in [*results, *single]]
    assert len({r.prediction_id for r in [*results, *single]}) == 3

    with pytest.raises(InvalidRequest, match="at most 4"):
        classify(service, ["x"] * 5)
    assert log.count() == 3, "a rejected request must not be logged"


def test_packaged_model_needs_the_packaging_labels(
    make_config: Callable[..., object], tiny_model_dir: Path
) -> None:
    settings = ServiceSettings.from_config(make_config())
    with pytest.raises(ConfigError, match=MODEL_LABEL_VERSION):
        ClassificationService.from_packaged_model(tiny_model_dir, {MODEL_LABEL_NAME: "m"}, {}, settings)


def test_feedback_takes_the_models_labels_and_the_service_limits(
    make_config: Callable[..., object], tiny_model_dir: Path
) -> None:
    cfg = make_config(["serving.max_batch_items=3", "serving.max_text_chars=20"])
    service = ClassificationService.load(
        tiny_model_dir, "review-sentiment-test", "5", ServiceSettings.from_config(cfg)
    )
    (answer,) = classify(service, "quiet and sturdy")
    wrong = "negative" if answer.label == "positive" else "positive"

    stored = service.feedback(
        [
            {"prediction_id": answer.prediction_id, "label": wrong},
            {"text": "never asked", "label": "positive"},
        ]
    )

    assert [(r.text, r.label) for r in stored] == [("quiet and sturdy", wrong), ("never asked", "positive")]
    assert (stored[0].prediction_id, stored[0].model_version, stored[0].predicted_label) == (
        answer.prediction_id,
        "5",
        answer.label,
    )
    log = InferenceLog(cfg.serving.inference_log)
    assert log.count_feedback() == 2
    refusals = [
        ([{"text": "meh", "label": "neutral"}], 400, "expected one of: negative, positive"),
        ([{"text": f"t{i}", "label": "positive"} for i in range(4)], 400, "at most 3"),
        ([{"text": "x" * 21, "label": "positive"}], 400, "the limit is 20"),
        ([{"prediction_id": "f" * 32, "label": "positive"}], 404, "is not a prediction"),
        ([{"text": "quiet and sturdy", "label": wrong}], 409, "already has feedback"),
    ]
    for items, status, message in refusals:
        with pytest.raises(InvalidFeedback, match=message) as refused:
            service.feedback(items)
        assert refused.value.status == status
    assert log.count_feedback() == 2
