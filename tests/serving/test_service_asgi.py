"""The packaged Bento loaded in-process: its ASGI app through a test client, and the service class itself."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.serving.serving_support import (
    MAX_BATCH_ITEMS,
    MAX_TEXT_CHARS,
    MODEL_VERSION,
    Packaged,
    wait_for_rows,
)

from refinery.monitoring.inference_log import InferenceLog
from refinery.serving import ENV_INFERENCE_LOG, ServiceSettings, env_name

# BentoML 1.4.40's own deprecation noise (pathspec patterns, pydantic 2.11 APIs), not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*GitWildMatchPattern:DeprecationWarning",
    "ignore::pydantic.warnings.PydanticDeprecatedSince211",
)


@pytest.fixture(scope="module")
def service(packaged: Packaged) -> Iterator[Any]:
    """The Bento's service, loaded as `bentoml serve` loads it, against the test BentoML home."""
    import bentoml
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    with pytest.MonkeyPatch.context() as mp:
        for key, value in ServiceSettings.from_config(packaged.cfg).to_env().items():
            mp.setenv(key, value)
        # BentoML fixes its home on first use in a process; point its model store at the test home.
        BentoMLContainer.model_store.set(ModelStore(str(packaged.home / "models")))
        try:
            yield bentoml.load(str(packaged.bento_dir))
        finally:
            BentoMLContainer.model_store.reset()
            BentoMLContainer.bento_arguments.reset()
            sys.modules.pop("service", None)


@pytest.fixture(scope="module")
def client(service: Any) -> Iterator[Any]:
    from starlette.testclient import TestClient

    with TestClient(service.to_asgi()) as test_client:
        yield test_client


def test_asgi_classify_and_log(client: Any, packaged: Packaged) -> None:
    log = InferenceLog(packaged.cfg.serving.inference_log)
    before = log.count()
    response = client.post("/classify", json={"texts": ["sturdy and quiet", "leaks everywhere"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [set(r) for r in body] == [{"label", "scores", "model_version", "prediction_id"}] * 2
    assert {r["model_version"] for r in body} == {MODEL_VERSION}
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-5 for r in body)
    assert wait_for_rows(log, before + 2) == before + 2
    assert list(log.recent(2)["prediction_id"]) == [r["prediction_id"] for r in body]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"texts": ""}, "texts is blank"),
        ({"texts": ["a"] * (MAX_BATCH_ITEMS + 1)}, f"at most {MAX_BATCH_ITEMS}"),
        ({"texts": [1]}, "Input should be a valid string"),
        ({}, "Field required"),
    ],
    ids=["blank", "too-many", "number", "missing"],
)
def test_asgi_malformed_requests_get_400(client: Any, payload: dict[str, object], reason: str) -> None:
    response = client.post("/classify", json=payload)
    assert response.status_code == 400
    assert reason in response.text


def _unique(text: str) -> str:
    # The module's tests share one inference log, where a text gets one label at most.
    return f"{text} {uuid.uuid4().hex[:8]}"


def test_asgi_feedback_by_prediction_id_and_by_text(client: Any, packaged: Packaged) -> None:
    log = InferenceLog(packaged.cfg.serving.inference_log)
    text = _unique("hums quietly")
    (answer,) = client.post("/classify", json={"texts": [text]}).json()
    wrong = "negative" if answer["label"] == "positive" else "positive"
    before = log.feedback_watermark()

    response = client.post(
        "/feedback",
        json={
            "items": [
                {"prediction_id": answer["prediction_id"], "label": wrong},
                {"text": _unique("never classified"), "label": "positive"},
            ]
        },
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stored"] == 2
    assert body["feedback_ids"] == sorted(body["feedback_ids"])
    assert body["feedback_ids"][0] > before
    rows = log.feedback_rows().set_index("id").loc[body["feedback_ids"]]
    assert list(rows["label"]) == [wrong, "positive"]
    first = rows.iloc[0]
    assert (first["text"], first["prediction_id"], first["model_version"], first["predicted_label"]) == (
        text,
        answer["prediction_id"],
        MODEL_VERSION,
        answer["label"],
    )
    assert rows.iloc[1]["prediction_id"] is None


# A valid first item: "nothing stored" then shows that a request is refused whole.
FINE = {"text": "a fine first item", "label": "positive"}

BAD_FEEDBACK = [
    pytest.param({"items": []}, 400, "items is an empty list", id="empty"),
    pytest.param(
        {"items": [FINE] + [{"text": f"t{i}", "label": "positive"} for i in range(MAX_BATCH_ITEMS)]},
        400,
        f"items has {MAX_BATCH_ITEMS + 1} items; at most {MAX_BATCH_ITEMS} are accepted per request",
        id="too-many",
    ),
    pytest.param(
        {"items": [FINE, {"prediction_id": "0" * 32, "label": "positive"}]},
        404,
        f"items[1].prediction_id '{'0' * 32}' is not a prediction in the inference log",
        id="unknown-id",
    ),
    pytest.param(
        {"items": [FINE, {"text": "meh", "label": "neutral"}]},
        400,
        "items[1].label 'neutral' is not a label of the served model; expected one of: negative, positive",
        id="undeclared-label",
    ),
    pytest.param(
        {"items": [FINE, {"prediction_id": "0" * 32, "text": "meh", "label": "positive"}]},
        400,
        "items[1] has both prediction_id and text",
        id="both",
    ),
    pytest.param(
        {"items": [FINE, {"label": "positive"}]},
        400,
        "items[1] has neither prediction_id nor text",
        id="neither",
    ),
    pytest.param(
        {"items": [FINE, {"text": " ", "label": "positive"}]}, 400, "items[1].text is blank", id="blank"
    ),
    pytest.param(
        {"items": [FINE, {"text": "x" * (MAX_TEXT_CHARS + 1), "label": "positive"}]},
        400,
        f"items[1].text has {MAX_TEXT_CHARS + 1} characters; the limit is {MAX_TEXT_CHARS}",
        id="text-too-long",
    ),
    pytest.param(
        {"items": [FINE, {"text": "twice", "label": "positive"}, {"text": "twice", "label": "negative"}]},
        409,
        "items[2] labels the same text as items[1]",
        id="same-text-twice",
    ),
    # Type errors are pydantic's, before refinery sees the request: the body names where.
    pytest.param(
        {"items": [FINE, {"text": "meh", "label": 1}]}, 400, "Input should be a valid string", id="number"
    ),
    pytest.param({"items": [FINE, {"text": "meh"}]}, 400, "Field required", id="label-missing"),
    pytest.param(
        {"items": [FINE, {"text": "meh", "lable": "positive"}]},
        400,
        "Extra inputs are not permitted",
        id="typo",
    ),
    pytest.param({"items": "meh"}, 400, "Input should be a valid array", id="not-a-list"),
    pytest.param({}, 400, "Field required", id="no-items"),
]


@pytest.mark.parametrize(("payload", "status", "reason"), BAD_FEEDBACK)
def test_asgi_bad_feedback_gets_4xx_with_the_reason_and_stores_nothing(
    client: Any, packaged: Packaged, payload: dict[str, object], status: int, reason: str
) -> None:
    log = InferenceLog(packaged.cfg.serving.inference_log)
    before = log.count_feedback()
    response = client.post("/feedback", json=payload)
    assert response.status_code == status, response.text
    assert reason in response.text
    assert log.count_feedback() == before


def test_asgi_feedback_on_a_labelled_text_is_a_conflict(client: Any, packaged: Packaged) -> None:
    log = InferenceLog(packaged.cfg.serving.inference_log)
    text = _unique("labelled once")
    first = client.post("/feedback", json={"items": [{"text": text, "label": "positive"}]})
    assert first.status_code == 200, first.text
    before = log.count_feedback()

    again = client.post(
        "/feedback",
        json={
            "items": [{"text": _unique("fresh"), "label": "positive"}, {"text": text, "label": "negative"}]
        },
    )

    assert again.status_code == 409, again.text
    assert "items[1]: the text already has feedback" in again.text
    assert log.count_feedback() == before


def _failures(endpoint: str) -> float:
    import prometheus_client

    sample = "refinery_inference_log_write_failures_total"
    return prometheus_client.REGISTRY.get_sample_value(sample, {"endpoint": endpoint}) or 0.0


def test_service_class_maps_errors_to_http_statuses(
    service: Any, packaged: Packaged, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import time

    from bentoml.exceptions import InvalidArgument, ServiceUnavailable

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv(ENV_INFERENCE_LOG, f"sqlite:///{blocker / 'inference.db'}")
    monkeypatch.setenv(env_name("log_queue_rows"), "3")
    instance = service()  # a fresh instance reads its settings now, at startup
    assert instance.core.model_version == MODEL_VERSION
    assert instance.core.model_name == packaged.cfg.registry.model_name

    with pytest.raises(InvalidArgument, match="texts is an empty list") as bad:
        asyncio.run(instance.classify(texts=[]))
    assert bad.value.error_code == 400

    before = {endpoint: _failures(endpoint) for endpoint in ("/classify", "/feedback")}
    # Answered: the rows wait in the queue while the writer retries; each failed write is counted.
    answered = asyncio.run(instance.classify(texts=["unloggable one", "unloggable two"]))
    assert [a.model_version for a in answered] == [MODEL_VERSION] * 2
    deadline = time.monotonic() + 10
    while _failures("/classify") == before["/classify"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _failures("/classify") > before["/classify"]
    # The queue (3 rows) has no room for two more: back-pressure, with when to come back.
    refused = asyncio.run(instance.classify(texts=["one more", "and another"]))
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert "the inference log is 2 rows behind (at most 3, serving.log_queue_rows)" in refused.body.decode()
    assert instance.core.writer.queued == 2

    with pytest.raises(InvalidArgument, match="items is an empty list") as bad:
        instance.feedback(items=[])
    assert bad.value.error_code == 400
    with pytest.raises(ServiceUnavailable, match="inference log cannot be written") as down:
        instance.feedback(items=[{"text": "an unstorable label", "label": "positive"}])
    assert down.value.error_code == 503
    assert _failures("/feedback") == before["/feedback"] + 1
    assert asyncio.run(instance.core.close(timeout_s=0.5)) == 2, "unwritable rows are reported at shutdown"


def test_service_class_maps_feedback_refusals_to_404_and_409(service: Any) -> None:
    from bentoml.exceptions import NotFound

    instance = service()
    with pytest.raises(NotFound, match="is not a prediction") as missing:
        instance.feedback(items=[{"prediction_id": "0" * 32, "label": "positive"}])
    assert missing.value.error_code == 404
    text = _unique("conflicted")
    instance.feedback(items=[{"text": text, "label": "positive"}])
    with pytest.raises(Exception, match="already has feedback") as twice:
        instance.feedback(items=[{"text": text, "label": "negative"}])
    assert twice.value.error_code == 409
