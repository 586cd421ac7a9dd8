"""The stand-in Kubeflow Pipelines API server (tests/kfp_server.py) and an environment pointing at it.

No Kubeflow Pipelines API server can run here, so these tests talk to the stand-in over real HTTP with the
real kfp SDK client; what they check is refinery's use of the v2beta1 API, not Kubeflow itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.kfp_server import KfpServer

_COMPILED: dict[tuple[Any, ...], Any] = {}


@pytest.fixture
def kfp_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No KFP setting of this shell leaks in; no service-account token file exists."""
    for name in (
        "REFINERY_KFP_HOST",
        "KF_PIPELINES_ENDPOINT",
        "KF_PIPELINES_UI_ENDPOINT",
        "REFINERY_KFP_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-such-token"))
    # Runs are followed without waiting between looks.
    monkeypatch.setattr("refinery.orchestration.kfp_api.POLL_SECONDS", 0.01)
    return monkeypatch


@pytest.fixture
def kfp_server(kfp_env: pytest.MonkeyPatch) -> Iterator[KfpServer]:
    """A started stand-in server that REFINERY_KFP_HOST names (over configs/prod.yaml's kfp.host)."""
    with KfpServer() as server:
        kfp_env.setenv("REFINERY_KFP_HOST", server.url)
        yield server


@pytest.fixture
def compile_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compile each (pipeline, configuration) once per session: the result depends on nothing else, and
    compiling the training pipeline takes a few tenths of a second each time."""
    from refinery.orchestration import compiling

    real = compiling.compile_pipeline

    def compile_pipeline(cfg: Any, pipeline: str = "training", **kwargs: Any) -> Any:
        options = {k: v for k, v in kwargs.items() if k != "source"}
        key = (pipeline, cfg.model_dump_json(), tuple(sorted(options.items())))
        if key not in _COMPILED:
            _COMPILED[key] = real(cfg, pipeline, **kwargs)
        return _COMPILED[key]

    monkeypatch.setattr(compiling, "compile_pipeline", compile_pipeline)
    monkeypatch.setattr("refinery.orchestration.schedules_file.compile_pipeline", compile_pipeline)
