"""The serving image's build context, wheel look-up and failures that need no container engine.

Building and running the image is tested in tests/containers/test_serving_image.py.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from refinery.errors import PackagingError
from refinery.packaging import container
from refinery.packaging.bento import package
from refinery.packaging.container import containerize, image_name, local_wheels, prepare_context, wheelhouses

TORCH_WHEEL = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"


def _wheelhouse(root: Path, *names: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_bytes(b"not really a wheel")
    return root


def test_build_context_holds_the_bento_its_model_readable_and_the_build_only_files(
    make_config: Callable[..., object], tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_config()
    result = package(cfg, tiny_model_dir, "4")
    home = Path(cfg.packaging.bentoml_home)
    model_name, model_version = result.model_tag.split(":")
    stored_weights = home / "models" / model_name / model_version / "model.safetensors"
    stored_weights.chmod(0o600)  # as some libraries save it
    cas = tmp_path / "cas"
    cas.mkdir()
    (cas / "proxy.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(container, "EXTRA_CA_DIR", cas)
    import numpy
    import torch

    wheel = f"torch-{torch.__version__}-cp311-cp311-manylinux_2_28_x86_64.whl"
    numpy_wheel = f"numpy-{numpy.__version__}-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheels = _wheelhouse(tmp_path / "wheels", wheel, numpy_wheel)

    ctx = tmp_path / "ctx"
    info = prepare_context(cfg, result.bento_tag, ctx, [wheels])

    assert info["labels"]["model_version"] == "4"
    bento = ctx / "bento"
    assert yaml.safe_load((bento / "bento.yaml").read_text())["args"] == {"model_tag": result.model_tag}
    assert (bento / "env" / "python" / "requirements.txt").is_file()
    assert (bento / "src" / "service.py").is_file()
    weights = bento / "models" / model_name / model_version / "model.safetensors"
    assert weights.read_bytes() == stored_weights.read_bytes()
    # The service runs as an unprivileged user: everything it reads is readable by all, the store unchanged.
    assert stat.S_IMODE(weights.stat().st_mode) == 0o644
    assert stat.S_IMODE(stored_weights.stat().st_mode) == 0o600
    assert stat.S_IMODE((bento / "env" / "docker" / "entrypoint.sh").stat().st_mode) == 0o755
    # Only a local build (torch 2.13.0+cpu here) needs its wheel; numpy comes from the package index.
    expected = [wheel] if "+" in torch.__version__ else []
    assert [p.name for p in (ctx / "build" / "wheels").iterdir()] == expected
    assert [p.name for p in (ctx / "build" / "ca-certificates").iterdir()] == ["proxy.crt"]


def test_local_wheels_are_found_by_name_and_version(tmp_path: Path) -> None:
    first = _wheelhouse(tmp_path / "a", "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl")
    second = _wheelhouse(tmp_path / "b", TORCH_WHEEL, "not-a-wheel.whl")
    requirements = ["torch==2.13.0+cpu", "numpy==2.4.6", "--find-links /nowhere", "# comment", ""]
    assert local_wheels(requirements, [first, second]) == [second / TORCH_WHEEL]
    assert local_wheels(["numpy==2.4.6", "bentoml==1.4.40"], []) == []


def test_missing_local_wheel_names_the_requirement_and_where_it_looked(tmp_path: Path) -> None:
    empty = _wheelhouse(tmp_path / "empty")
    with pytest.raises(PackagingError, match=r"torch==2\.13\.0\+cpu is a local build .*searched: .*empty"):
        local_wheels(["torch==2.13.0+cpu"], [empty])


def test_wheelhouses_come_first_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFINERY_WHEELHOUSE", str(tmp_path / "mine"))
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    found = wheelhouses()
    assert found[0] == tmp_path / "mine"
    assert tmp_path in found


def test_image_name_is_the_gitops_repository_and_the_bento_version(
    make_config: Callable[..., object],
) -> None:
    cfg = make_config(["gitops.image_repository=registry.example/refinery-serving"])
    assert (
        image_name(cfg, "review-sentiment-test-service:abc123") == "registry.example/refinery-serving:abc123"
    )
    for tag in ("review-sentiment-test-service:latest", "no-version", "a:b/c"):
        with pytest.raises(PackagingError, match="must be NAME:VERSION"):
            image_name(cfg, tag)


def test_unknown_bento_is_refused(make_config: Callable[..., object], tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match=r"Bento refinery-service:nope is not in .*package it first"):
        prepare_context(make_config(), "refinery-service:nope", tmp_path / "ctx", [])


def test_without_podman_the_message_says_so(
    make_config: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PackagingError, match="podman is not installed"):
        containerize(make_config(), "review-sentiment-test-service:abc123")


def _cli_args(tmp_path: Path, tiny_model_dir: Path) -> list[str]:
    from tests.conftest import REPO_ROOT

    return [
        "-c",
        str(REPO_ROOT / "configs" / "test.yaml"),
        "--set",
        f"state_dir={tmp_path / 'state'}",
        "--set",
        f"data.uri={tmp_path / 'reviews.csv'}",
        "--set",
        f"model.base={tiny_model_dir}",
    ]


def test_cli_package_needs_image(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from refinery.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["package", *_cli_args(tmp_path, tiny_model_dir)])
    assert exit_info.value.code == 2
    assert "--image" in capsys.readouterr().err


def test_cli_package_without_a_packaged_champion_says_so(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from refinery.cli import EXIT_USAGE, main

    assert main(["package", *_cli_args(tmp_path, tiny_model_dir), "--image"]) == EXIT_USAGE
    assert "no packaged champion of review-sentiment-test" in capsys.readouterr().err
    assert main(["package", *_cli_args(tmp_path, tiny_model_dir), "--version", "3", "--image"]) == EXIT_USAGE
    assert "version 3 of review-sentiment-test" in capsys.readouterr().err
