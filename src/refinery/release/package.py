"""Package a registered version for serving, and check the package before it is promoted.

The pipeline's ``package`` and ``check-serving`` steps (:mod:`refinery.orchestration.steps`) and
``refinery models promote VERSION`` (:func:`refinery.release.flows.promote_manually`) package a version
the same way, here; every promotion checks, before anything moves, that the Bento is still in the store as
packaged and that the serving image exists (:func:`check_bento`, :func:`pin_image`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from refinery.config import RunConfig
    from refinery.packaging.bento import PackageResult
    from refinery.packaging.check import ServingCheckResult
    from refinery.registry.mlflow_registry import Registry


def serving_image(cfg: RunConfig) -> str:
    """The serving image of the refinery release running this: the project image in ``images.registry``."""
    from refinery.version import Images

    return Images.default(registry=cfg.images.registry).project


def pin_image(image: str) -> str:
    """``image`` pinned by the digest its registry holds for the tag (podman's local storage has no
    registry: such a name is kept by tag).

    Raises:
        ImageRegistryError: The registry is unreachable, refuses the credentials or lacks the image.
    """
    from refinery.packaging.oci import ImageReference, resolve

    return image if ImageReference.parse(image).local else resolve(image).pinned


def check_bento(bento: PackageResult, version: str) -> None:
    """Check that ``bento`` is in the Bento store with the SHA-256 recorded when ``version`` was packaged.

    Raises:
        PackagingError: The Bento is not in the store, or differs from what was packaged.
    """
    from refinery.errors import PackagingError
    from refinery.packaging import store

    if store.sha256(bento.bento_uri) != bento.bento_sha256:
        raise PackagingError(
            f"Bento {bento.bento_tag} at {bento.bento_uri} differs from what was packaged (SHA-256"
            f" {bento.bento_sha256[:12]}...); package version {version} again"
        )


def packaged(tags: dict[str, str]) -> PackageResult | None:
    """The Bento a version's tags record, or None when it was never packaged."""
    from refinery.packaging.bento import PackageResult

    return PackageResult.from_tags(tags)


def package_registered(
    cfg: RunConfig,
    registry: Registry,
    version: str,
    model_dir: Path | None = None,
    data_dir: Path | None = None,
) -> PackageResult:
    """The Bento of a registered version as this release packages it, published and recorded on the version.

    The model (``model_dir``, or downloaded from the registry) goes through
    :func:`refinery.packaging.bento.package`, whose Bento tag hashes the model with the build context
    (the service, refinery's own code, the pinned requirements): a Bento this release already stored is
    reused, never rebuilt, and a Bento an earlier release packaged is not served by this release's image.
    The version's tags then name it (with the SHA-256 of the stored file). Running it again after a crash
    anywhere leaves one Bento and one set of tags.

    With ``packaging.runtime: onnx-int8`` the int8 export is checked against fp32 on ``data_dir``'s test
    split first (:mod:`refinery.packaging.runtime`); the runtime chosen and the comparison are tagged.

    Raises:
        RegistryError: The version cannot be read, downloaded or tagged.
        PackagingError: Packaging failed, or the store cannot be reached.
    """
    from refinery.packaging.bento import package
    from refinery.packaging.runtime import choose_runtime

    info = registry.get(version)
    with tempfile.TemporaryDirectory(prefix="refinery-package-") as tmp:
        source = model_dir or registry.download(info.version, "model", Path(tmp))
        choice = choose_runtime(cfg, source, data_dir, Path(tmp))
        result = package(cfg, choice.model_dir, info.version, runtime=choice.runtime)
    registry.tag(info.version, {**result.tags(), **choice.tags()})
    return result


def check_serving(
    cfg: RunConfig, bento: PackageResult, data_dir: Path, out_dir: Path
) -> ServingCheckResult | None:
    """Serve ``bento`` as production does and load it with the test split's texts; the gate's serving
    rules decide whether it may be promoted (see :mod:`refinery.packaging.check`). None when
    ``gate.serving_check.enabled`` is false: nothing was checked.

    Raises:
        PackagingError: The Bento cannot be fetched or served.
    """
    if not cfg.gate.serving_check.enabled:
        return None
    import pandas as pd

    from refinery.packaging.check import check_serving as run_check

    texts = pd.read_parquet(Path(data_dir) / "test.parquet", columns=["text"])["text"].astype(str).tolist()
    return run_check(cfg, bento, texts, Path(out_dir))
