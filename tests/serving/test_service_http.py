"""The packaged Bento served by a real `bentoml serve` subprocess, exercised over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from tests.processes import free_port
from tests.serving.serving_support import (
    MAX_BATCH_ITEMS,
    MAX_TEXT_CHARS,
    MODEL_VERSION,
    Packaged,
    wait_for_rows,
)

from refinery.client import ServiceClient, ServiceError
from refinery.loadtest.process import served
from refinery.monitoring.inference_log import InferenceLog
from refinery.serving import serve_command

pytestmark = pytest.mark.slow

LABELS = {"negative", "positive"}
READY_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def server(packaged: Packaged, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    port = free_port()
    cfg = packaged.cfg.model_copy(update={"serving": packaged.cfg.serving.model_copy(update={"port": port})})
    argv, env = serve_command(cfg, packaged.result.bento_tag)
    log_path = tmp_path_factory.mktemp("server") / "bentoml-serve.log"
    base_url = f"http://127.0.0.1:{port}"
    with (
        served(argv, env, base_url, READY_TIMEOUT_S, log_path, cwd=tmp_path_factory.getbasetemp()),
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        yield client


def _check_predictions(body: object, n: int) -> None:
    assert isinstance(body, list)
    assert len(body) == n
    for item in body:
        assert set(item) == {"label", "scores", "model_version", "prediction_id"}
        assert item["label"] in LABELS
        assert set(item["scores"]) == LABELS
        assert sum(item["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert item["label"] == max(item["scores"], key=item["scores"].get)
        assert item["model_version"] == MODEL_VERSION


def test_single_text_and_list_are_classified_and_logged(server: httpx.Client, packaged: Packaged) -> None:
    log = InferenceLog(packaged.cfg.serving.inference_log)
    before = log.count()

    single = server.post("/classify", json={"texts": "Great blender, crushes ice in seconds."})
    assert single.status_code == 200, single.text
    _check_predictions(single.json(), 1)

    texts = ["Stopped working after a week.", "Does the job.", "Love it!"]
    batch = server.post("/classify", json={"texts": texts})
    assert batch.status_code == 200, batch.text
    _check_predictions(batch.json(), 3)

    assert wait_for_rows(log, before + 4) == before + 4
    logged = log.recent(4)
    assert list(logged["text"]) == ["Great blender, crushes ice in seconds.", *texts]
    assert list(logged["label"]) == [p["label"] for p in single.json() + batch.json()]
    assert set(logged["model_version"]) == {MODEL_VERSION}
    assert set(logged["model_name"]) == {packaged.cfg.registry.model_name}


MALFORMED = [
    pytest.param({"texts": ""}, "texts is blank", id="empty-string"),
    pytest.param({"texts": "   "}, "texts is blank", id="blank-string"),
    pytest.param({"texts": []}, "texts is an empty list", id="empty-list"),
    pytest.param({"texts": ["fine", 42]}, "Input should be a valid string", id="list-with-number"),
    pytest.param({"texts": None}, "Input should be a valid", id="null"),
    pytest.param(
        {"texts": "x" * (MAX_TEXT_CHARS + 1)},
        f"the limit is {MAX_TEXT_CHARS} (serving.max_text_chars)",
        id="too-long",
    ),
    pytest.param(
        {"texts": ["ok", "y" * (MAX_TEXT_CHARS + 1)]},
        f"texts[1] has {MAX_TEXT_CHARS + 1} characters",
        id="item-too-long",
    ),
    pytest.param(
        {"texts": ["a"] * (MAX_BATCH_ITEMS + 1)},
        f"at most {MAX_BATCH_ITEMS} are accepted per request",
        id="too-many",
    ),
    pytest.param({}, "Field required", id="missing-field"),
    pytest.param({"text": "hello"}, "Field required", id="misnamed-field"),
]


@pytest.mark.parametrize(("payload", "reason"), MALFORMED)
def test_malformed_request_gets_400_with_the_reason(
    server: httpx.Client, packaged: Packaged, payload: dict[str, object], reason: str
) -> None:
    log = InferenceLog(packaged.cfg.serving.inference_log)
    before = log.count()
    response = server.post("/classify", json=payload)
    assert response.status_code == 400, response.text
    assert reason in response.text
    assert log.count() == before


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", ("json_invalid", [], "Invalid JSON: key must be a string at line 1 column 2")),
        # An empty body is an empty input: the texts are missing.
        (b"", ("missing", ["texts"], "Field required")),
        (b"[1, 2", ("json_invalid", [], "Invalid JSON: EOF while parsing a list at line 1 column 5")),
    ],
    ids=["garbage", "empty-body", "truncated"],
)
def test_non_json_body_gets_400_with_the_reason(
    server: httpx.Client, packaged: Packaged, body: bytes, problem: tuple[str, list[str], str]
) -> None:
    log = InferenceLog(packaged.cfg.serving.inference_log)
    before = log.count()
    response = server.post("/classify", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    answer = response.json()
    # BentoML validates the body against the API's input model before the service sees it.
    assert answer["error"] == "1 validation error for Input"
    assert [(d["type"], d["loc"], d["msg"]) for d in answer["detail"]] == [problem]
    assert log.count() == before


def test_error_bodies_name_the_index_of_a_bad_item(server: httpx.Client) -> None:
    response = server.post("/classify", json={"texts": ["fine", "also fine", 3]})
    assert response.status_code == 400
    locations = [d["loc"] for d in response.json()["detail"]]
    assert ["texts", "list[str]", 2] in locations


def test_the_client_sends_feedback_in_batches(server: httpx.Client, packaged: Packaged) -> None:
    log = InferenceLog(packaged.cfg.serving.inference_log)
    client = ServiceClient(str(server.base_url))
    answers = client.classify(
        ["client feedback one", "client feedback two", "client feedback three"], batch_size=2
    )
    assert len({a["prediction_id"] for a in answers}) == 3
    items: list[dict[str, object]] = [
        {"prediction_id": a["prediction_id"], "label": "negative"} for a in answers
    ]
    items.append({"text": "client feedback, never classified", "label": "positive"})

    ids = client.feedback(items, batch_size=3)

    assert ids == sorted(ids) and len(ids) == 4
    rows = log.feedback_rows().set_index("id").loc[ids]
    assert list(rows["prediction_id"])[:3] == [a["prediction_id"] for a in answers]
    assert list(rows["label"]) == ["negative"] * 3 + ["positive"]

    before = log.count_feedback()
    with pytest.raises(ServiceError, match=r"answered 409 for items\[0:1\].*already has feedback"):
        client.feedback([{"text": "client feedback, never classified", "label": "negative"}])
    with pytest.raises(
        ServiceError, match=r"answered 404 for items\[2:3\] \(.*the 2 items before it were stored"
    ):
        client.feedback(
            [
                {"text": "client batch a", "label": "positive"},
                {"text": "client batch b", "label": "positive"},
                {"prediction_id": "0" * 32, "label": "positive"},
            ],
            batch_size=2,
        )
    assert log.count_feedback() == before + 2


def test_health_and_metrics(server: httpx.Client) -> None:
    assert server.get("/readyz").status_code == 200
    assert server.get("/livez").status_code == 200
    server.post("/classify", json={"texts": "metrics please"})
    metrics = server.get("/metrics")
    assert metrics.status_code == 200
    assert "bentoml_service_request_total" in metrics.text
    # refinery's own counter, at 0 from the start, for the inference-log alert.
    assert 'refinery_inference_log_write_failures_total{endpoint="/classify"} 0.0' in metrics.text
    assert 'endpoint="/classify"' in metrics.text


def test_openapi_describes_classify(server: httpx.Client) -> None:
    spec = server.get("/docs.json").json()
    assert "/classify" in spec["paths"]
    assert "/feedback" in spec["paths"]


def test_the_bento_serves_its_own_model_not_the_latest(server: httpx.Client, packaged: Packaged) -> None:
    # A newer model was imported into the same store after this Bento was built; the Bento pins its own.
    models = sorted(
        p.name for p in (packaged.home / "models" / "review-sentiment-test").iterdir() if p.is_dir()
    )
    assert len(models) == 2
    assert packaged.newer.model_tag != packaged.result.model_tag
    response = server.post("/classify", json={"texts": "which model answers?"})
    assert response.status_code == 200
    assert response.json()[0]["model_version"] == MODEL_VERSION
