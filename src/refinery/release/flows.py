"""The ways a version becomes an environment's champion, each ending in
:func:`refinery.release.promote.promote_version`:

- :func:`promote_challenger`: the pipeline's ``promote`` step, after its own evaluate, gate, register,
  package and check-serving steps (:mod:`refinery.orchestration.steps`);
- :func:`promote_manually`: ``refinery models promote VERSION``, which evaluates the version against the
  champion now, gates it and packages it (:mod:`refinery.release.judge`, :mod:`refinery.release.package`);
- :func:`promote_to_environment`: ``refinery models promote --env ENVIRONMENT``, what another environment
  serves, through the version's recorded gate decision;
- :func:`rollback`: ``refinery models rollback``, an earlier champion again.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.errors import GateRejected, RefineryError
from refinery.registry.champions import (
    NO_CHAMPION,
    REPLACED_CHAMPION,
    SERVING_IMAGE,
    environment_tag,
    evaluated_against,
    gate_record,
    recorded,
)
from refinery.release.package import package_registered, packaged, serving_image
from refinery.release.promote import PromotionRecord, gitops_for, promote_version
from refinery.results import Record

if TYPE_CHECKING:
    from refinery.config import RunConfig
    from refinery.packaging.bento import PackageResult
    from refinery.registry.mlflow_registry import ModelVersionInfo, Registry


def _forced(force_reason: str | None) -> str | None:
    """``force_reason`` stripped, or None when nothing is forced.

    Raises:
        RefineryError: Forced without a reason.
    """
    if force_reason is None:
        return None
    if not force_reason.strip():
        raise RefineryError("--force needs --reason TEXT: it is recorded with the promotion")
    return force_reason.strip()


def promote_challenger(
    cfg: RunConfig, version: str, bento: PackageResult, image: str, *, registry: Registry | None = None
) -> PromotionRecord:
    """The pipeline's promote step: make the registered ``version`` the configured environment's champion,
    served from ``bento`` by ``image``, refused when another promotion replaced the champion the version
    was evaluated against at registration.

    Raises:
        PromotionConflict: The version carries no ``compared_with_champion`` tag, or the champion changed.
    """
    from refinery.registry.mlflow_registry import Registry

    registry = registry or Registry(cfg.registry)
    info = registry.get(version)
    return promote_version(
        cfg,
        version,
        bento,
        image=image,
        expected_champion=evaluated_against(info),
        reason=f"gate {info.tags.get('gate', 'passed')}",
        registry=registry,
    )


@dataclass(frozen=True)
class ManualPromotion(Record):
    """The outcome of :func:`promote_manually`: the gate's decision and, unless it stopped there, the record.

    Attributes:
        decision: The gate's decision on the version against the current champion
            (a :class:`refinery.evaluation.gate.GateDecision`).
        record: The promotion, or None when the gate rejected the version and nothing was forced.
    """

    decision: Any
    record: PromotionRecord | None


def promote_manually(
    cfg: RunConfig,
    reference: str,
    *,
    force_reason: str | None = None,
    data_dir: Path | None = None,
) -> ManualPromotion:
    """``refinery models promote``: evaluate a registered version against the configured environment's
    champion, gate it, package it when it has no Bento yet, and promote it there.

    The test set is ``data_dir/test.parquet`` when given, else the one the version was evaluated on at
    registration. With ``force_reason`` a rejected version is promoted anyway and the reason recorded
    (version tag and commit message); the gate still runs, so its verdict is recorded beside it. The
    decision becomes the version's ``gate`` tag (with ``gate_by``), the record a promotion to a later
    environment reads.

    Raises:
        RefineryError: The version is already champion, or cannot be found, evaluated or packaged.
        PromotionConflict: The champion changed while this ran.
    """
    from refinery.registry.mlflow_registry import Registry
    from refinery.release.judge import decide, evaluate_against_champion, record_gate, registered_test_set

    forced = _forced(force_reason)
    env = cfg.gitops.environment
    registry = Registry(cfg.registry)
    info = registry.resolve(reference, environment=env)
    champion = registry.champion(env, legacy=True)
    if champion is not None and champion.version == info.version:
        raise RefineryError(f"version {info.version} of {registry.name} is already the champion of {env}")
    with tempfile.TemporaryDirectory(prefix="refinery-promote-") as tmp:
        work = Path(tmp)
        model_dir = registry.download(info.version, "model", work / "challenger")
        test_dir = data_dir or registered_test_set(registry, info.version, cfg.data.slice_columns, work)
        evaluation = evaluate_against_champion(
            cfg, registry, champion, test_dir, model_dir, work / "evaluation"
        )
        decision = decide(cfg, evaluation)
        if not decision.passed and forced is None:
            return ManualPromotion(decision, None)
        bento = package_registered(cfg, registry, info.version, model_dir)
    record_gate(
        registry, info.version, decision, environment=env, champion=champion, by="refinery models promote"
    )
    verdict = "passed" if decision.passed else "rejected"
    reason = f"forced: {forced} (gate {verdict})" if forced else f"gate {verdict}"
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


def promote_to_environment(
    cfg: RunConfig,
    environment: str,
    *,
    source: str | None = None,
    reference: str | None = None,
    force_reason: str | None = None,
) -> PromotionRecord:
    """``refinery models promote --env ENVIRONMENT``: promote what ``source`` serves to ``environment``,
    through the version's recorded gate decision, with the same Bento and serving image.

    No evaluation runs: the version was gated when it was registered or promoted (``gate`` tag), and
    only a version whose recorded decision passed goes on, unless ``force_reason`` overrides it (the
    reason and the recorded decision are then both kept in the tags and the commit message). In a
    protected environment the change goes to a review branch (see :mod:`refinery.release.promote`).

    Args:
        cfg: The run configuration; ``gitops.environment`` is the default source.
        environment: The environment to promote to.
        source: The environment whose champion to promote (default: ``gitops.environment``).
        reference: The version, when named: it must be what ``source`` serves, unless forced.
        force_reason: Promote even against the gate record (or another version than ``source``
            serves), recording why.

    Raises:
        GateRejected: The version's recorded gate decision is not a pass, and nothing was forced.
        RefineryError: ``source`` serves nothing or is ``environment``, the version is not what it
            serves, was never packaged, or has no serving image recorded.
        PromotionConflict: The environment's champion changed while this ran.
    """
    from refinery.registry.mlflow_registry import Registry

    forced = _forced(force_reason)
    configured = cfg.gitops.environment
    source = source or configured
    if source == environment:
        raise RefineryError(
            f"{environment} is both the source and the target; name the environment to promote from with"
            " --from (the default is gitops.environment)"
        )
    registry = Registry(cfg.registry)
    info = _served_by(registry, source, reference, configured=configured, forced=forced is not None)
    gate = gate_record(info)
    if not gate.passed and forced is None:
        raise GateRejected(
            f"version {info.version} of {registry.name} is not promoted to {environment}: its recorded gate "
            f"decision is {gate.text!r} (--force --reason TEXT overrides, and is recorded)"
        )
    bento = packaged(info.tags)
    if bento is None:
        raise RefineryError(
            f"version {info.version} of {registry.name} was never packaged, so it was never served"
        )
    image = _image_served_in(cfg, info, source, environment)
    target = registry.champion(environment, legacy=environment == configured)
    where = f"from {source}, gate record: {gate.text}"
    reason = f"forced: {forced} ({where})" if forced else where
    return promote_version(
        cfg,
        info.version,
        bento,
        image=image,
        expected_champion=target.version if target else None,
        reason=f"by refinery models promote --env {environment}, {reason}",
        registry=registry,
        environment=environment,
    )


def _served_by(
    registry: Registry, source: str, reference: str | None, *, configured: str, forced: bool
) -> ModelVersionInfo:
    """The version to promote from ``source``: what it serves, or ``reference`` when that is it (or
    when forced).

    Raises:
        RefineryError: ``source`` serves nothing, or another version than ``reference``.
    """
    from refinery.registry.mlflow_registry import champion_alias

    served = registry.champion(source, legacy=source == configured)
    if served is None:
        raise RefineryError(
            f"{source} serves no version of {registry.name} (no alias {champion_alias(source)} in "
            f"{registry.uri}): promote one there first"
        )
    info = served if reference is None else registry.resolve(reference, environment=configured)
    if info.version != served.version and not forced:
        raise RefineryError(
            f"version {info.version} of {registry.name} is not what {source} serves (version "
            f"{served.version}); promote it to {source} first, name its environment with --from, or "
            "--force --reason TEXT"
        )
    return info


def _image_served_in(cfg: RunConfig, info: ModelVersionInfo, source: str, environment: str) -> str:
    """The serving image ``info`` runs with in ``source``: its tag, else what the overlay names.

    Raises:
        RefineryError: Neither says.
    """
    from refinery.gitops.repo import current_release

    image = recorded(info, source, SERVING_IMAGE, legacy=source == cfg.gitops.environment)
    if image is not None:
        return image
    overlay = current_release(gitops_for(cfg, source))
    if overlay is None or overlay.model_version != info.version:
        raise RefineryError(
            f"version {info.version} of {info.name} has no {environment_tag(source, SERVING_IMAGE)}"
            f" tag and the {source} overlay does not name it: which image served it is unknown"
        )
    return overlay.image


def rollback(
    cfg: RunConfig, to: str | None = None, reason: str = "", *, environment: str | None = None
) -> PromotionRecord:
    """``refinery models rollback``: make an earlier version an environment's champion again, with its
    GitOps commit (a review branch in a protected environment).

    Args:
        cfg: The run configuration.
        to: The version to go back to; default the one the current champion replaced there.
        reason: Recorded in the version's tags and in the commit message.
        environment: The environment (default: ``gitops.environment``).

    Raises:
        RefineryError: There is no champion, no earlier one is recorded, or the target was never
            packaged (it was never served).
        PromotionConflict: The champion changed while this ran.
    """
    from refinery.registry.mlflow_registry import Registry

    env = environment or cfg.gitops.environment
    legacy = env == cfg.gitops.environment
    registry = Registry(cfg.registry)
    champion = registry.champion(env, legacy=legacy)
    if champion is None:
        raise RefineryError(f"{registry.name} has no champion in {env} to roll back ({registry.uri})")
    target = to or recorded(champion, env, REPLACED_CHAMPION, legacy=legacy)
    if target is None or target == NO_CHAMPION:
        raise RefineryError(
            f"version {champion.version} of {registry.name} replaced no earlier champion in {env}; "
            "name the version to go back to with --to"
        )
    info = registry.get(target)
    if info.version == champion.version:
        raise RefineryError(f"version {info.version} of {registry.name} is already the champion of {env}")
    bento = packaged(info.tags)
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
        image=recorded(info, env, SERVING_IMAGE, legacy=legacy) or serving_image(cfg),
        expected_champion=champion.version,
        action="rollback",
        reason=f"from version {champion.version}: {why}",
        registry=registry,
        environment=env,
    )
