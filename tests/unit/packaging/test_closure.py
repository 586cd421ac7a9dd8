"""The import closure a Bento ships: what the service imports of refinery, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from refinery.errors import PackagingError
from refinery.packaging.bento import served_sources
from refinery.packaging.closure import import_closure, imported_names

REPO_ROOT = Path(__file__).resolve().parents[3]


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_closure_follows_every_kind_of_import_and_skips_type_checking(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "service.py": "import os\nfrom pkg.api import handler\n",
            "pkg/__init__.py": "",
            "pkg/api/__init__.py": "from .model import load\n",
            "pkg/api/model.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg.heavy import Big\n"
                "else:\n    from pkg import light\n"
                "def load():\n    from ..util import helper\n    import pkg.deep.inner\n"
            ),
            "pkg/light.py": "",
            "pkg/util.py": "from pkg import light as again\n",
            "pkg/deep/inner.py": "",  # a namespace folder: no __init__.py
            "pkg/heavy.py": "import pkg.unused\n",
            "pkg/unused.py": "",
            "pkg/training/__init__.py": "",
        },
    )

    files = import_closure([tmp_path / "service.py"], tmp_path / "pkg")

    assert [p.as_posix() for p in files] == [
        "pkg/__init__.py",
        "pkg/api/__init__.py",
        "pkg/api/model.py",
        "pkg/deep/inner.py",
        "pkg/light.py",
        "pkg/util.py",
    ]


def test_relative_imports_resolve_against_their_module() -> None:
    assert imported_names("from . import a\nfrom ..b import c\n", "pkg.sub.mod", False) == {
        "pkg.sub",
        "pkg.sub.a",
        "pkg.b",
        "pkg.b.c",
    }
    assert imported_names("from .x import y\n", "pkg.sub", True) == {"pkg.sub.x", "pkg.sub.x.y"}


def test_a_file_that_does_not_parse_is_named(tmp_path: Path) -> None:
    write(tmp_path, {"service.py": "import pkg.broken\n", "pkg/__init__.py": "", "pkg/broken.py": "def (:\n"})
    with pytest.raises(PackagingError, match=r"pkg/broken\.py cannot be parsed"):
        import_closure([tmp_path / "service.py"], tmp_path / "pkg")


def test_the_service_imports_no_training_data_or_pipeline_code() -> None:
    files = {p.as_posix() for p in served_sources(REPO_ROOT / "serving")}

    assert {
        "refinery/__init__.py",
        "refinery/serving/__init__.py",
        "refinery/serving/onnx.py",
        "refinery/modeling.py",
        "refinery/pooling.py",
        "refinery/architecture.py",
        "refinery/monitoring/inference_log.py",
    } <= files
    for package in ("training", "data", "evaluation", "registry", "orchestration", "gitops", "loadtest"):
        assert not {f for f in files if f.startswith(f"refinery/{package}/")}, package
    assert not {f for f in files if f.startswith("refinery/packaging/")}
