"""SIGTERM under load: every answered prediction reaches the inference log, on sqlite and PostgreSQL.

A real `bentoml serve` of the packaged Bento writes its inference log one row per transaction (so a
backlog builds up while requests pour in); SIGTERM goes to the server's main process, as the kubelet
sends it, while the load runs. Once the server has exited, the log must hold exactly as many rows as
requests were answered 200.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from tests.serving.serving_support import Packaged

from refinery.loadtest.load import LoadResult, run_load
from refinery.loadtest.process import free_port, served
from refinery.monitoring.inference_log import InferenceLog
from refinery.serving import ServiceSettings, bentoml_serve_argv, env_name

pytestmark = pytest.mark.slow


def test_nothing_answered_is_lost_across_sigterm(packaged: Packaged, sql_url: str, tmp_path: Path) -> None:
    port = free_port()
    settings = ServiceSettings.from_config(packaged.cfg).replace(inference_log=sql_url, log_batch_rows=1)
    env = {"BENTOML_HOME": str(packaged.home), **settings.to_env()}
    assert env[env_name("log_batch_rows")] == "1"
    bodies = [f'{{"texts": "request {i}: sturdy, quiet and cheap"}}'.encode() for i in range(50)]
    log_path = tmp_path / "server.log"
    outcome: list[LoadResult] = []

    with served(
        bentoml_serve_argv(packaged.result.bento_tag, "127.0.0.1", port),
        env,
        f"http://127.0.0.1:{port}",
        90,
        log_path,
        cwd=tmp_path,
    ) as server:
        url = f"{server.base_url}/classify"
        load = threading.Thread(
            target=lambda: outcome.append(run_load(url, bodies, 32, duration_s=6, timeout_s=20)), daemon=True
        )
        load.start()
        log = InferenceLog(sql_url)
        # Terminate once answers are flowing, while the writer is behind.
        deadline = time.monotonic() + 30
        while log.count() < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(server.pid, signal.SIGTERM)
        server.process.wait(timeout=60)
        load.join(timeout=60)

    (result,) = outcome
    answered = result.status_counts.get(200, 0)
    assert answered > 50
    assert set(result.status_counts) <= {200, 503}, result.status_counts
    server_log = log_path.read_text(errors="replace")
    queued = [int(n) for n in re.findall(r"writing (\d+) queued predictions before shutdown", server_log)]
    assert queued, server_log[-3000:]
    assert "were not written" not in server_log
    assert InferenceLog(sql_url).count() == answered, f"{queued} queued at SIGTERM"
