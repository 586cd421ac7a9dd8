"""package() and fetch(): real Bento builds from the tiny model, offline, through a folder Bento store."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from refinery.errors import PackagingError
from refinery.packaging import store
from refinery.packaging.bento import (
    PackageResult,
    directory_digest,
    fetch,
    package,
    pin_dependency_closure,
    pin_packages,
    served_sources,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def _bento_dir(home: Path, tag: str) -> Path:
    name, version = tag.split(":")
    return home / "bentos" / name / version


def _model_dir(home: Path, tag: str) -> Path:
    name, version = tag.split(":")
    return home / "models" / name / version


def _stored(home: Path, kind: str) -> list[str]:
    root = home / kind
    if not root.is_dir():
        return []
    return sorted(f"{d.parent.name}:{d.name}" for d in root.glob("*/*") if d.is_dir() and d.name != "latest")


def _store_files(cfg: object) -> list[str]:
    root = Path(cfg.packaging.bento_store)  # type: ignore[attr-defined]
    return (
        sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        if root.is_dir()
        else []
    )


def test_package_publishes_a_bento_that_fetch_makes_servable(
    make_config: Callable[..., object], tiny_model_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config()

    result = package(cfg, tiny_model_dir, "3")

    digest = directory_digest(tiny_model_dir)
    assert result.model_tag == f"review-sentiment-test:v3-{digest[:12]}"
    assert result.bento_tag.startswith("review-sentiment-test-service:v3-")
    # One file in the store, addressed by the tag, with the SHA-256 recorded.
    name, version = result.bento_tag.split(":")
    assert _store_files(cfg) == [f"{name}/{version}.bento"]
    assert result.bento_uri == str(Path(cfg.packaging.bento_store) / name / f"{version}.bento")
    assert store.file_sha256(Path(result.bento_uri)) == result.bento_sha256
    assert not result.reused

    # Fetched into a BentoML home (as `refinery serve` does): the Bento and its model, as packaged.
    home = tmp_path / "serving-home"
    assert fetch(result, home) == result.bento_tag
    assert _stored(home, "bentos") == [result.bento_tag]
    assert _stored(home, "models") == [result.model_tag]
    model_path = _model_dir(home, result.model_tag)
    for file in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (model_path / file).read_bytes() == (tiny_model_dir / file).read_bytes()
    model_info = yaml.safe_load((model_path / "model.yaml").read_text())
    assert model_info["labels"] == {
        "refinery.model_name": "review-sentiment-test",
        "refinery.model_version": "3",
    }
    assert model_info["metadata"]["max_length"] == 64
    assert model_info["metadata"]["labels"] == ["negative", "positive"]
    assert model_info["metadata"]["sha256"] == digest

    # The Bento records exactly that model and passes it to the service as its model_tag argument.
    bento = _bento_dir(home, result.bento_tag)
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["args"] == {"model_tag": result.model_tag}
    assert [m["tag"] for s in info["services"] for m in s["models"]] == [result.model_tag]
    assert info["labels"]["model_version"] == "3"
    assert info["schema"]["routes"][0]["route"] == "/classify"

    # Offline build: no lock, packages pinned to the versions installed here.
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    assert not (bento / "env" / "python" / "requirements.lock.txt").exists()
    import torch
    import transformers

    assert f"torch=={torch.__version__}" in requirements
    assert f"transformers=={transformers.__version__}" in requirements
    assert any(line.startswith("bentoml==") for line in requirements)

    # The service and the refinery code it imports travel inside the Bento, and no other refinery code:
    # no training code, no demo data generator.
    src = bento / "src"
    assert (src / "service.py").read_text() == (REPO_ROOT / "serving" / "service.py").read_text()
    shipped = sorted(p.relative_to(src) for p in (src / "refinery").rglob("*") if p.is_file())
    assert shipped == served_sources(REPO_ROOT / "serving")
    assert (src / "refinery" / "serving" / "__init__.py").is_file()
    assert (src / "refinery" / "monitoring" / "inference_log.py").is_file()
    assert not (src / "refinery" / "training").exists()
    assert not (src / "refinery" / "data" / "demo.py").exists()
    assert not list(src.rglob("__pycache__"))

    # Fetching again finds it in the home; the result round-trips through JSON and registry tags.
    assert fetch(result, home) == result.bento_tag
    written = result.write_json(tmp_path / "out" / "package.json")
    assert PackageResult(**json.loads(written.read_text())) == result
    assert PackageResult.from_tags(result.tags()) == result


def test_packaging_again_reuses_the_stored_bento_and_a_change_makes_another(
    make_config: Callable[..., object], tiny_model_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config()
    first = package(cfg, tiny_model_dir, "1")
    again = package(cfg, tiny_model_dir, "1")
    # A retried package step: same tag, same file, nothing built.
    assert again.reused and (again.bento_tag, again.bento_uri, again.bento_sha256) == (
        first.bento_tag,
        first.bento_uri,
        first.bento_sha256,
    )
    assert len(_store_files(cfg)) == 1

    # Another version of the same files, or the same model with another service: another Bento.
    other_version = package(cfg, tiny_model_dir, "2")
    service_dir = tmp_path / "svc"
    shutil.copytree(REPO_ROOT / "serving", service_dir)
    (service_dir / "service.py").write_text((service_dir / "service.py").read_text() + "\n# changed\n")
    other_service = package(make_config([f"packaging.service_dir={service_dir}"]), tiny_model_dir, "1")
    tags = {first.bento_tag, other_version.bento_tag, other_service.bento_tag}
    assert len(tags) == 3 and len(_store_files(cfg)) == 3


def test_a_bento_changed_in_the_store_is_refused_when_fetched(
    make_config: Callable[..., object], tiny_model_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config()
    result = package(cfg, tiny_model_dir, "1")
    stored = Path(result.bento_uri)
    stored.write_bytes(stored.read_bytes()[:-10])
    home = tmp_path / "home"
    with pytest.raises(PackagingError, match=r"has SHA-256 .* not the .* recorded when it was packaged"):
        fetch(result, home)
    assert _stored(home, "bentos") == [] and _stored(home, "models") == []
    missing = PackageResult(
        result.bento_tag, result.model_tag, str(tmp_path / "gone.bento"), result.bento_sha256
    )
    with pytest.raises(PackagingError, match=r"gone\.bento does not exist"):
        fetch(missing, home)


def _copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_model_dir(make_config: Callable[..., object], tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match=r"model directory not found: .*absent"):
        package(make_config(), tmp_path / "absent", "1")


def test_model_without_safetensors_is_refused(
    make_config: Callable[..., object], tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = _copy_model(tiny_model_dir, tmp_path / "pickled")
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    with pytest.raises(PackagingError, match=r"no model\.safetensors"):
        package(make_config(), model, "1")


def test_model_labels_must_match_the_configured_labels(
    make_config: Callable[..., object], tiny_model_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config(["data.labels=[bad, good]"])
    with pytest.raises(PackagingError, match=r"labels \['negative', 'positive'\] differ from data.labels"):
        package(cfg, tiny_model_dir, "1")
    assert _store_files(cfg) == []


def test_model_name_that_cannot_be_a_tag(make_config: Callable[..., object], tiny_model_dir: Path) -> None:
    with pytest.raises(PackagingError, match=r"registry\.model_name 'reviews\.'"):
        package(make_config(["registry.model_name=reviews."]), tiny_model_dir, "1")


def test_service_dir_without_build_spec(
    make_config: Callable[..., object], tiny_model_dir: Path, tmp_path: Path
) -> None:
    service_dir = tmp_path / "svc"
    service_dir.mkdir()
    (service_dir / "service.py").write_text("")
    cfg = make_config([f"packaging.service_dir={service_dir}"])
    with pytest.raises(PackagingError, match=r"bentofile\.yaml is missing"):
        package(cfg, tiny_model_dir, "1")


def test_locking_build_spec_is_refused(
    make_config: Callable[..., object], tiny_model_dir: Path, tmp_path: Path
) -> None:
    service_dir = tmp_path / "svc"
    shutil.copytree(REPO_ROOT / "serving", service_dir)
    spec = yaml.safe_load((service_dir / "bentofile.yaml").read_text())
    spec["python"]["lock_packages"] = True
    (service_dir / "bentofile.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(PackagingError, match="lock_packages must be false"):
        package(make_config([f"packaging.service_dir={service_dir}"]), tiny_model_dir, "1")


def test_failed_build_names_the_cause_and_leaves_nothing_in_the_store(
    make_config: Callable[..., object], tiny_model_dir: Path, tmp_path: Path
) -> None:
    service_dir = tmp_path / "svc"
    shutil.copytree(REPO_ROOT / "serving", service_dir)
    (service_dir / "service.py").write_text('raise RuntimeError("service module is broken")\n')
    cfg = make_config([f"packaging.service_dir={service_dir}"])
    with pytest.raises(PackagingError, match="service module is broken"):
        package(cfg, tiny_model_dir, "1")
    assert _store_files(cfg) == []


def test_pin_packages() -> None:
    import numpy

    assert pin_packages(["numpy", "torch>=2", "pyyaml"])[:2] == [f"numpy=={numpy.__version__}", "torch>=2"]
    with pytest.raises(PackagingError, match=r"'surely-not-installed-dist' listed in bentofile\.yaml"):
        pin_packages(["surely-not-installed-dist"])


def test_pin_dependency_closure_pins_what_the_listed_packages_need() -> None:
    import importlib.metadata

    import transformers

    pinned = pin_dependency_closure(["transformers", "numpy>=1"])
    assert pinned[:2] == [f"transformers=={transformers.__version__}", "numpy>=1"]
    names = [line.split("==")[0].lower() for line in pinned[2:]]
    assert names == sorted(names) and len(names) == len(set(names))
    # transformers' own dependencies, and bentoml's (BentoML adds the bentoml line itself).
    for dist in ("tokenizers", "huggingface-hub", "safetensors", "starlette", "uvicorn"):
        assert f"{dist}=={importlib.metadata.version(dist)}" in pinned[2:]
    assert not any(line.lower().startswith(("bentoml==", "numpy==")) for line in pinned)
    # Left out: what another platform needs (colorama, for click on Windows) and what only an extra
    # nobody asked for needs (accelerate and torch, for transformers[torch]; both installed here).
    assert not any(line.startswith(("colorama==", "accelerate==", "torch==")) for line in pinned)
