"""Serving depends on no training code: the packaged Bento holds none, and serves with it unimportable.

The Bento is loaded in a fresh interpreter whose refinery is the Bento's own copy (its ``src/`` first on
``sys.path``) and where importing refinery's training, data, evaluation, registry, orchestration or gitops
packages raises; its ASGI app then classifies a text through HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.serving.serving_support import MODEL_VERSION, Packaged

from refinery.serving import ServiceSettings

#: Packages of refinery that serving must not import.
FORBIDDEN = ("training", "data", "evaluation", "registry", "orchestration", "gitops")

SCRIPT = r"""
import importlib.abc
import json
import sys

bento_dir, home, forbidden = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
blocked = tuple(f"refinery.{name}" for name in forbidden)


class Unimportable(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in blocked or fullname.startswith(tuple(f"{b}." for b in blocked)):
            raise ModuleNotFoundError(f"{fullname} is unimportable in this test", name=fullname)
        return None


sys.meta_path.insert(0, Unimportable())
sys.path.insert(0, f"{bento_dir}/src")
try:
    import refinery.training
except ModuleNotFoundError as exc:
    refused = str(exc)
else:
    raise SystemExit("refinery.training was importable")

import bentoml
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models import ModelStore
from starlette.testclient import TestClient

BentoMLContainer.model_store.set(ModelStore(f"{home}/models"))
service = bentoml.load(bento_dir)
with TestClient(service.to_asgi()) as client:
    response = client.post("/classify", json={"texts": ["sturdy and quiet"]})
import refinery

print(json.dumps({
    "status": response.status_code,
    "body": response.json(),
    "refused": refused,
    "refinery_from": refinery.__file__,
    "loaded": sorted(name for name in sys.modules if name.startswith(blocked)),
}))
"""


def test_the_bento_holds_no_training_code(packaged: Packaged) -> None:
    src = packaged.bento_dir / "src"
    assert (src / "refinery" / "serving" / "__init__.py").is_file()
    for name in FORBIDDEN:
        assert not (src / "refinery" / name).exists(), name
    assert not (src / "refinery" / "data" / "demo.py").exists()


def test_the_bento_serves_with_training_unimportable(packaged: Packaged, tmp_path: Path) -> None:
    env = {
        **os.environ,
        **ServiceSettings.from_config(packaged.cfg).to_env(),
        "BENTOML_HOME": str(packaged.home),
        "BENTOML_DO_NOT_TRACK": "true",
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(packaged.bento_dir), str(packaged.home), ",".join(FORBIDDEN)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])

    assert outcome["refused"] == "refinery.training is unimportable in this test"
    assert outcome["loaded"] == []
    assert Path(outcome["refinery_from"]) == packaged.bento_dir / "src" / "refinery" / "__init__.py"
    assert outcome["status"] == 200, outcome["body"]
    (answer,) = outcome["body"]
    assert answer["label"] in {"negative", "positive"}
    assert set(answer["scores"]) == {"negative", "positive"}
    assert abs(sum(answer["scores"].values()) - 1) < 1e-5
    assert answer["label"] == max(answer["scores"], key=answer["scores"].get)
    assert answer["model_version"] == MODEL_VERSION
    assert len(answer["prediction_id"]) == 32
