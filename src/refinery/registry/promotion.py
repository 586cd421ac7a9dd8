"""Promotion and rollback: the champion alias and the GitOps overlay move together, or neither does.

Two pipeline runs can finish at the same moment, each with a challenger that passed the gate against
the same champion. Only one may replace it: the other was judged against a champion that is no longer
the one serving. The GitOps push orders them, because git lands a push only on the branch head it was
built on (the ref is locked and compared; non-fast-forward pushes are refused). A promotion

1. pins the serving image by the digest the container registry holds for its tag (a commit can only
   name an image that exists), checks that the version's Bento is in the Bento store with the SHA-256
   recorded at packaging, and that the registry's champion is the version the challenger was
   evaluated against (else another promotion has already finished);
2. commits the release to the overlay on a fresh clone, after checking that the overlay also names
   that champion, and pushes; a push that lost a race is redone on a new clone, which now names the
   other release, so it is refused (another promotion is finishing);
3. tags the version (image, commit, time, reason, the champion it replaced) and moves the ``champion``
   alias, last.

Should step 3 fail (the registry went away after the push), the commit is reverted by a second one, so
the overlay does not stay on a version that is not champion; if the revert fails too, the error says
what each side names and how to repair it. A step that is retried after it pushed finds its own release
in the overlay and only moves the alias.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from refinery.errors import PromotionConflict, RefineryError, RegistryError
from refinery.results import to_jsonable

if TYPE_CHECKING:
    from refinery.config import RunConfig
    from refinery.gitops.repo import Release
    from refinery.packaging.bento import PackageResult
    from refinery.registry.mlflow_registry import ModelVersionInfo, Registry

#: Version tag naming the champion a version was evaluated against (``none`` for the first model).
EVALUATED_AGAINST = "compared_with_champion"
NO_CHAMPION = "none"
#: Version tag naming the serving image (pinned by digest) the version was promoted with.
SERVING_IMAGE = "serving_image"

Action = Literal["promote", "rollback"]


@dataclass(frozen=True)
class PromotionRecord:
    """What :func:`promote_version` did.

    Attributes:
        name: Registered model name.
        version: The new champion.
        previous: The champion it replaced, or None for the first one.
        bento_tag: The Bento the overlay now serves.
        image: The serving image the overlay names (by digest, when it comes from a registry).
        commit: The GitOps commit naming the release (the existing head when it was already there).
        environment: The overlay promoted.
        action: ``promote`` or ``rollback``.
        reason: Why, as recorded (the gate's verdict, or the reason given by a person).
        changed: False when the version was already champion and the overlay already named it.
    """

    name: str
    version: str
    previous: str | None
    bento_tag: str
    image: str
    commit: str
    environment: str
    action: str
    reason: str
    changed: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return to_jsonable(self)


def evaluated_against(info: ModelVersionInfo) -> str | None:
    """The champion version ``info`` was evaluated against at registration (None: it was the first).

    Raises:
        PromotionConflict: The version carries no such tag (registered outside the pipeline): which
            champion it beat is unknown, so it cannot be promoted automatically.
    """
    value = info.tags.get(EVALUATED_AGAINST)
    if value is None:
        raise PromotionConflict(
            f"version {info.version} of {info.name} has no {EVALUATED_AGAINST!r} tag, so the champion it "
            "was judged against is unknown; promote it with `refinery models promote`, which evaluates it now"
        )
    return None if value == NO_CHAMPION else value


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


def package_registered(
    cfg: RunConfig, registry: Registry, version: str, model_dir: Path | None = None
) -> PackageResult:
    """The Bento of a registered version as this release packages it, published and recorded on the version.

    The model (``model_dir``, or downloaded from the registry) goes through
    :func:`refinery.packaging.bento.package`, whose Bento tag hashes the model with the build context
    (the service, refinery's own code, the pinned requirements): a Bento this release already stored is
    reused, never rebuilt, and a Bento an earlier release packaged is not served by this release's image.
    The version's tags then name it (with the SHA-256 of the stored file). Running it again after a crash
    anywhere leaves one Bento and one set of tags.

    Raises:
        RegistryError: The version cannot be read, downloaded or tagged.
        PackagingError: Packaging failed, or the store cannot be reached.
    """
    import tempfile

    from refinery.packaging.bento import package

    info = registry.get(version)
    with tempfile.TemporaryDirectory(prefix="refinery-package-") as tmp:
        source = model_dir or registry.download(info.version, "model", Path(tmp))
        result = package(cfg, source, info.version)
    registry.tag(info.version, result.tags())
    return result


def promote_version(
    cfg: RunConfig,
    version: str,
    bento: PackageResult,
    *,
    image: str,
    expected_champion: str | None,
    action: Action = "promote",
    reason: str = "",
    registry: Registry | None = None,
) -> PromotionRecord:
    """Make ``version`` the champion: one GitOps commit, then the ``champion`` alias (see the module).

    Args:
        cfg: The run configuration (registry, GitOps repository and environment).
        version: The version to serve.
        bento: Its Bento, which must be in the Bento store with the recorded SHA-256.
        image: The serving image; pinned by its registry digest before anything moves.
        expected_champion: The champion the decision was made against (None: there was none). The
            promotion is refused when the registry or the overlay names another.
        action: ``promote`` (a challenger replaces the champion) or ``rollback``.
        reason: Recorded in the version's tags and in the commit message.
        registry: The registry to use (default: one for ``cfg.registry``).

    Returns:
        What was done.

    Raises:
        PromotionConflict: The champion is no longer ``expected_champion`` (another promotion won).
        ImageRegistryError: The serving image is not in its registry, or the registry is unreachable;
            nothing moved.
        PackagingError: The Bento is not in the store, or differs from what was packaged; nothing moved.
        RegistryError: The registry is unreachable or the version does not exist: nothing moved; or it
            failed after the commit, which was then reverted (the message says so, or says that the
            revert failed too and how to complete the promotion).
        GitOpsError: The commit could not be made; nothing moved.
    """
    from refinery.errors import PackagingError
    from refinery.gitops.repo import Release, revert
    from refinery.gitops.repo import promote as commit_release
    from refinery.packaging import store
    from refinery.registry.mlflow_registry import Registry

    registry = registry or Registry(cfg.registry)
    info = registry.get(version)
    pinned = pin_image(image)
    if store.sha256(bento.bento_uri) != bento.bento_sha256:
        raise PackagingError(
            f"Bento {bento.bento_tag} at {bento.bento_uri} differs from what was packaged (SHA-256"
            f" {bento.bento_sha256[:12]}...); package version {info.version} again"
        )
    champion = registry.champion()
    current = champion.version if champion else None
    release = Release(
        registry.name, info.version, bento.bento_tag, bento.bento_uri, bento.bento_sha256, pinned
    )
    if current == info.version:
        # Already champion (a retried step, or a repeated command): make sure the overlay agrees.
        result = commit_release(cfg.gitops, release, expected=(info.version,), action=action, reason=reason)
        return _record(cfg, release, None, result.commit, action, reason, changed=result.changed)
    if current != expected_champion:
        raise PromotionConflict(
            f"cannot {action} version {info.version} of {registry.name}: the champion is now "
            f"{_named(current)}, but the decision was made against {_named(expected_champion)}; another "
            "promotion finished first. Run the pipeline again to evaluate against the new champion."
        )
    # The overlay must name the same champion; a retry after our own push finds our release there.
    result = commit_release(
        cfg.gitops, release, expected=(expected_champion, info.version), action=action, reason=reason
    )
    # The Bento's own tags were written when it was packaged (package_registered).
    tags = {
        SERVING_IMAGE: pinned,
        "gitops_commit": result.commit,
        "champion_since": datetime.now(UTC).isoformat(timespec="seconds"),
        "champion_reason": f"{action}: {reason or '-'}",
    }
    # What a rollback goes back to; a rollback keeps the target's own, so repeated rollbacks walk back.
    if action == "promote":
        tags["replaced_champion"] = current or NO_CHAMPION
    try:
        registry.tag(info.version, tags)
        registry.set_champion(info.version)
    except RefineryError as exc:
        if not result.changed:
            raise
        try:
            revert(
                cfg.gitops,
                result.commit,
                f"moving the champion alias to version {info.version} failed: {exc}",
            )
        except RefineryError as undo:
            raise type(exc)(
                f"{exc}; the GitOps commit {result.commit[:12]} naming version {info.version} could not be "
                f"reverted either ({undo}): the overlay names version {info.version} while the registry's "
                f"champion is {_named(current)}. Once both are reachable, `refinery models promote "
                f"{info.version} --force --reason ...` completes this promotion (the commit is there, the "
                "alias follows)"
            ) from exc
        raise type(exc)(f"{exc}; the GitOps commit {result.commit[:12]} was reverted, nothing moved") from exc
    return _record(cfg, release, current, result.commit, action, reason, changed=True)


def _named(version: str | None) -> str:
    return "no champion" if version is None else f"version {version}"


def _record(
    cfg: RunConfig,
    release: Release,
    previous: str | None,
    commit: str,
    action: str,
    reason: str,
    *,
    changed: bool,
) -> PromotionRecord:
    return PromotionRecord(
        name=release.model_name,
        version=release.model_version,
        previous=previous,
        bento_tag=release.bento_tag,
        image=release.image,
        commit=commit,
        environment=cfg.gitops.environment,
        action=action,
        reason=reason,
        changed=changed,
    )


@dataclass(frozen=True)
class ManualPromotion:
    """The outcome of :func:`promote_manually`: the gate's decision and, unless it stopped there, the record.

    Attributes:
        decision: The gate's decision on the version against the current champion.
        record: The promotion, or None when the gate rejected the version and nothing was forced.
    """

    decision: Any
    record: PromotionRecord | None


def _test_set_of(registry: Registry, version: str, slice_columns: tuple[str, ...], into: Path) -> Path:
    """A prepared-data folder holding the test set ``version`` was evaluated on at registration (its
    ``evaluation/predictions.parquet``): text, label and the slice columns."""
    import pandas as pd

    from refinery.evaluation.evaluate import PREDICTIONS_FILE

    evaluation = registry.download(version, "evaluation", into)
    path = evaluation / PREDICTIONS_FILE
    if not path.is_file():
        raise RegistryError(
            f"version {version} of {registry.name} has no evaluation/{PREDICTIONS_FILE} to evaluate on; "
            "pass --data with a prepared dataset folder"
        )
    frame = pd.read_parquet(path)
    columns = [c for c in ("text", "label", *slice_columns) if c in frame.columns]
    data_dir = into / "test-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    frame[columns].to_parquet(data_dir / "test.parquet", index=False)
    return data_dir


def promote_manually(
    cfg: RunConfig,
    reference: str,
    *,
    force_reason: str | None = None,
    data_dir: Path | None = None,
) -> ManualPromotion:
    """``refinery models promote``: evaluate a registered version against the current champion, gate
    it, package it when it has no Bento yet, and promote it.

    The test set is ``data_dir/test.parquet`` when given, else the one the version was evaluated on at
    registration. With ``force_reason`` a rejected version is promoted anyway and the reason recorded
    (version tag and commit message); the gate still runs, so its verdict is recorded beside it.

    Raises:
        RefineryError: The version is already champion, or cannot be found, evaluated or packaged.
        PromotionConflict: The champion changed while this ran.
    """
    import tempfile

    from refinery.evaluation.evaluate import evaluate
    from refinery.evaluation.gate import decide
    from refinery.registry.mlflow_registry import Registry

    if force_reason is not None and not force_reason.strip():
        raise RefineryError("--force needs --reason TEXT: it is recorded with the promotion")
    registry = Registry(cfg.registry)
    info = registry.resolve(reference)
    champion = registry.champion()
    if champion is not None and champion.version == info.version:
        raise RefineryError(f"version {info.version} of {registry.name} is already the champion")
    with tempfile.TemporaryDirectory(prefix="refinery-promote-") as tmp:
        work = Path(tmp)
        model_dir = registry.download(info.version, "model", work / "challenger")
        champion_dir = registry.download(champion.version, "model", work / "champion") if champion else None
        test_dir = data_dir or _test_set_of(registry, info.version, cfg.data.slice_columns, work)
        result = evaluate(
            cfg,
            test_dir,
            model_dir,
            champion_dir,
            work / "evaluation",
            champion_version=champion.version if champion else None,
        )
        decision = decide(cfg.gate, result)
        if not decision.passed and force_reason is None:
            return ManualPromotion(decision, None)
        bento = package_registered(cfg, registry, info.version, model_dir)
    verdict = "passed" if decision.passed else "rejected"
    reason = f"forced: {force_reason.strip()} (gate {verdict})" if force_reason else f"gate {verdict}"
    record = promote_version(
        cfg,
        info.version,
        bento,
        image=serving_image(cfg),
        expected_champion=champion.version if champion else None,
        reason=f"by refinery models promote, {reason}",
        registry=registry,
    )
    return ManualPromotion(decision, record)


def rollback(cfg: RunConfig, to: str | None = None, reason: str = "") -> PromotionRecord:
    """``refinery models rollback``: make an earlier version champion again, with its GitOps commit.

    Args:
        cfg: The run configuration.
        to: The version to go back to; default the one the current champion replaced.
        reason: Recorded in the version's tags and in the commit message.

    Raises:
        RefineryError: There is no champion, no earlier one is recorded, or the target was never
            packaged (it was never served).
        PromotionConflict: The champion changed while this ran.
    """
    from refinery.packaging.bento import PackageResult
    from refinery.registry.mlflow_registry import Registry

    registry = Registry(cfg.registry)
    champion = registry.champion()
    if champion is None:
        raise RefineryError(f"{registry.name} has no champion to roll back ({registry.uri})")
    target = to or champion.tags.get("replaced_champion")
    if target is None or target == NO_CHAMPION:
        raise RefineryError(
            f"version {champion.version} of {registry.name} replaced no earlier champion; "
            "name the version to go back to with --to"
        )
    info = registry.get(target)
    if info.version == champion.version:
        raise RefineryError(f"version {info.version} of {registry.name} is already the champion")
    bento = PackageResult.from_tags(info.tags)
    if bento is None:
        raise RefineryError(
            f"version {info.version} of {registry.name} was never packaged, so it was never served; "
            f"`refinery models promote {info.version}` evaluates, packages and promotes it"
        )
    why = reason.strip() or "no reason given"
    # The image it was served with before, so that the rollback restores exactly that release.
    return promote_version(
        cfg,
        info.version,
        bento,
        image=info.tags.get(SERVING_IMAGE) or serving_image(cfg),
        expected_champion=champion.version,
        action="rollback",
        reason=f"from version {champion.version}: {why}",
        registry=registry,
    )
