"""The packaged Bento loaded in-process: its ASGI app through a test client, and the service class itself."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.serving.serving_support import MAX_BATCH_ITEMS, MODEL_VERSION, Packaged

from refinery.monitoring.inference_log import InferenceLog
from refinery.serving import ENV_INFERENCE_LOG, ServiceSettings

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
    assert [set(r) for r in body] == [{"label", "scores", "model_version"}] * 2
    assert {r["model_version"] for r in body} == {MODEL_VERSION}
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-5 for r in body)
    assert log.count() == before + 2


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


def test_service_class_maps_errors_to_http_statuses(
    service: Any, packaged: Packaged, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bentoml.exceptions import InvalidArgument, ServiceUnavailable

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv(ENV_INFERENCE_LOG, f"sqlite:///{blocker / 'inference.db'}")
    instance = service()  # a fresh instance reads its settings now, at startup
    assert instance.core.model_version == MODEL_VERSION
    assert instance.core.model_name == packaged.cfg.registry.model_name

    with pytest.raises(InvalidArgument, match="texts is an empty list") as bad:
        instance.classify(texts=[])
    assert bad.value.error_code == 400
    with pytest.raises(ServiceUnavailable, match="inference log cannot be written") as down:
        instance.classify(texts="an unloggable prediction")
    assert down.value.error_code == 503
