"""Champions per environment, promotion to a later environment through the gate record, review branches
for protected environments, the alias sync after a merge, the upgrade of a plain `champion` alias, and
`refinery status`.

Real registry (MLflow on sqlite), real Bentos in the store and a real bare GitOps repository, as in
test_promotion.py, whose Loop builds every version through the pipeline's own steps. A reviewer's merge
is a `git merge` in a clone of their own, pushed back. The running Deployments come from a stand-in for
the Kubernetes API server (tests/kubernetes_api.py): no API server can run here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.kubernetes_api import StandInKubernetesApi, deployment, release_configmap
from tests.processes import free_port
from tests.unit.gitops.test_review_branches import merge
from tests.unit.registry.test_promotion import IMAGE, LENIENT, Loop, other_model, prepared

from refinery.cli import main
from refinery.gitops.repo import Release, current_release, read_state
from refinery.gitops.repo import promote as commit_release
from refinery.packaging.bento import PackageResult
from refinery.release.sync import sync_aliases

__all__ = ["other_model", "prepared"]  # fixtures used here

MODEL = "review-sentiment-test"
BRANCH = f"promote/prod/{MODEL}-v1"
PROTECTED = ("gitops.protected_environments=[prod]",)


def loop_with_dev_champion(root: Path, model: Path, data: Path, extra: tuple[str, ...] = ()) -> Loop:
    """A loop whose version 1 is dev's champion, promoted by the pipeline's promote step."""
    state = Loop(root, model, data, extra)
    state.promote(*state.candidate("run1"))
    return state


def cli(loop: Loop, command: str, *args: str) -> int:
    """``refinery COMMAND`` (e.g. "models sync") with the loop's configuration and ``args``."""
    return main([*command.split(), *loop.cli, *args])


def prod_cfg(loop: Loop):  # type: ignore[no-untyped-def]
    return loop.cfg.gitops.model_copy(update={"environment": "prod"})


def git(loop: Loop, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", loop.cfg.gitops.repository, *args], capture_output=True, text=True, check=True
    ).stdout


def release_of(loop: Loop, version: str) -> Release:
    """The release the registry recorded for ``version`` (its Bento), served by the test image."""
    bento = PackageResult.from_tags(loop.registry.get(version).tags)
    assert bento is not None
    return Release(MODEL, version, bento.bento_tag, bento.bento_uri, bento.bento_sha256, IMAGE)


@pytest.fixture
def protected(tmp_path: Path, tiny_model_dir: Path, prepared: Path) -> Loop:
    """Version 1 is dev's champion; prod is protected and serves nothing yet."""
    return loop_with_dev_champion(tmp_path, tiny_model_dir, prepared, PROTECTED)


def test_promotion_to_a_protected_prod_waits_for_review_and_sync_moves_the_alias_after_the_merge(
    protected: Loop, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    loop = protected
    main_head = loop.head()
    link = "https://git.example/acme/gitops/compare/{base}...{branch}"

    assert cli(loop, "models promote", "--env", "prod", "--set", f"gitops.compare_url={link}") == 0

    out = capsys.readouterr().out
    assert f"promotion of {MODEL} version 1 in prod waits for review: branch {BRANCH}" in out
    assert f"review and merge it: https://git.example/acme/gitops/compare/main...{BRANCH}" in out
    assert "champion-prod stays on no version" in out
    # The branch holds the prod overlay change; main and the alias have not moved.
    assert loop.head() == main_head
    branch_head = git(loop, "rev-parse", f"refs/heads/{BRANCH}").strip()
    assert git(loop, "diff", "--name-only", main_head, branch_head).split() == [
        "k8s/overlays/prod/kustomization.yaml"
    ]
    assert current_release(prod_cfg(loop)) is None
    assert loop.registry.champions() == {"dev": "1"}
    # The same Bento and image as dev's release.
    shown = git(loop, "show", f"{branch_head}:k8s/overlays/prod/kustomization.yaml")
    dev_release = current_release(loop.cfg.gitops)
    assert dev_release is not None
    assert f"REFINERY_BENTO_SHA256={dev_release.bento_sha256}" in shown and "newTag: test" in shown
    message = git(loop, "log", "-1", "--format=%B", branch_head)
    assert (
        "Refinery-Reason: by refinery models promote --env prod, from dev, gate record: passed: " in message
    )
    # The version records the pending promotion.
    tags = loop.registry.get("1").tags
    assert tags["prod.pending_branch"] == BRANCH and tags["prod.pending_commit"] == branch_head
    assert tags["prod.pending_action"] == "promote" and tags["prod.pending_since"]
    assert "prod.gitops_commit" not in tags

    # Run again (without a web page to link to): the same branch, nothing new, the merge commands.
    assert cli(loop, "models promote", "--env", "prod") == 0
    out = capsys.readouterr().out
    assert f"merge it: git clone {loop.cfg.gitops.repository} gitops-review" in out
    assert f"git merge --no-ff origin/{BRANCH} && git push origin main" in out
    assert git(loop, "rev-parse", f"refs/heads/{BRANCH}").strip() == branch_head
    assert loop.registry.get("1").tags["prod.pending_since"] == tags["prod.pending_since"]

    assert cli(loop, "status") == 0
    out = capsys.readouterr().out
    assert "dev: alias v1, overlay v1 (commit " in out and "- in sync" in out
    assert "prod [protected]: alias none, overlay nothing released - MISMATCH" in out
    assert f"prod: v1 waits for review on {BRANCH} (commit {branch_head[:12]}); once it is merged" in out

    # A reviewer merges the branch; until the sync, the alias stays where it was.
    merge(loop.cfg.gitops.repository, BRANCH, tmp_path / "review")
    assert loop.registry.champions() == {"dev": "1"}
    assert cli(loop, "status") == 0
    out = capsys.readouterr().out
    assert "prod: alias none, overlay v1 (merged, alias not synced yet - run refinery models sync)" in out
    assert "waits for review" not in out

    assert cli(loop, "models sync") == 0

    out = capsys.readouterr().out
    assert "prod: moved: champion-prod moved from no champion to version 1" in out
    assert "dev: in_sync: champion-dev names version 1, as the overlay does" in out
    assert loop.registry.champions() == {"dev": "1", "prod": "1"}
    tags = loop.registry.get("1").tags
    assert tags["prod.gitops_commit"] == branch_head, "the commit that changed the prod overlay"
    assert tags["prod.serving_image"] == IMAGE and tags["prod.replaced_champion"] == "none"
    assert tags["prod.champion_reason"].startswith("promote: by refinery models promote --env prod, from dev")
    assert tags["prod.champion_reason"].endswith(f"(merged {BRANCH})")
    assert not [key for key in tags if key.startswith("prod.pending_")]
    # dev's records are its own.
    assert tags["dev.replaced_champion"] == "none" and tags["dev.gitops_commit"] == main_head

    # Idempotent: nothing moves, nothing is rewritten.
    again = sync_aliases(loop.cfg)
    assert {r.environment: r.outcome for r in again if r.environment in {"dev", "prod"}} == {
        "dev": "in_sync",
        "prod": "in_sync",
    }
    assert not any(r.changed for r in again)
    assert loop.registry.get("1").tags == tags
    assert cli(loop, "status") == 0
    out = capsys.readouterr().out
    assert "prod [protected]: alias v1, overlay v1 (commit " in out
    assert "MISMATCH" not in "\n".join(line for line in out.splitlines() if line.startswith(("dev", "prod")))


def test_sync_refuses_an_overlay_whose_bento_is_not_what_was_packaged(
    protected: Loop, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = protected
    packaged = release_of(loop, "1")
    forged = Release(MODEL, "1", f"{MODEL}-service:forged", packaged.bento_uri, "f" * 64, IMAGE)
    # Someone edits the prod overlay by hand (bypassing review) to name version 1 with another Bento.
    unprotected = prod_cfg(loop).model_copy(update={"protected_environments": ()})
    commit_release(unprotected, forged)

    results = {r.environment: r for r in sync_aliases(loop.cfg, ["prod"])}
    assert list(results) == ["prod"] and results["prod"].outcome == "refused"
    message = results["prod"].message
    assert f"Bento {MODEL}-service:forged (SHA-256 ffffffffffff...)" in message
    assert f"packaged as {packaged.bento_tag} (SHA-256 {packaged.bento_sha256[:12]}...)" in message
    assert loop.registry.champions() == {"dev": "1"}

    assert cli(loop, "models sync", "--env", "prod") == 1
    assert "prod: refused: the prod overlay names version 1 with Bento" in capsys.readouterr().out
    assert cli(loop, "models sync", "--env", "qa") == 2
    assert "has no environment 'qa'" in capsys.readouterr().err
    assert loop.registry.champions() == {"dev": "1"}


def test_promotion_to_prod_follows_the_gate_record_unless_forced_with_a_reason(
    protected: Loop, capsys: pytest.CaptureFixture[str], other_model: Path
) -> None:
    loop = protected
    # Version 2 is forced into dev past a rejecting gate: its gate record is now that rejection.
    version, _ = loop.candidate("run2", model=other_model)
    strict = [*LENIENT, "--set", "gate.min.macro_f1=0.999"]
    assert cli(loop, "models promote", *strict, version, "--force", "--reason", "demo for sales") == 0
    assert loop.registry.champions() == {"dev": version}
    assert loop.registry.get(version).tags["gate"].startswith("rejected: ")
    capsys.readouterr()
    branches = git(loop, "for-each-ref", "refs/heads/promote/")

    assert cli(loop, "models promote", "--env", "prod") == 1

    out = capsys.readouterr().out
    assert f"not promoted: version {version} of {MODEL} is not promoted to prod" in out
    assert "its recorded gate decision is 'rejected: " in out and "(refinery models promote in dev" in out
    assert git(loop, "for-each-ref", "refs/heads/promote/") == branches == ""
    assert "prod.pending_branch" not in loop.registry.get(version).tags

    # Only what dev serves goes on, unless forced.
    assert cli(loop, "models promote", "1", "--env", "prod") == 2
    assert f"version 1 of {MODEL} is not what dev serves (version {version})" in capsys.readouterr().err
    assert cli(loop, "models promote", "--env", "prod", "--force") == 2
    assert "--force needs --reason" in capsys.readouterr().err

    assert cli(loop, "models promote", "--env", "prod", "--force", "--reason", "CEO sign-off #7") == 0

    assert f"branch promote/prod/{MODEL}-v{version}" in capsys.readouterr().out
    reason = loop.registry.get(version).tags["prod.pending_reason"]
    assert reason.startswith("by refinery models promote --env prod, forced: CEO sign-off #7 (from dev, ")
    assert "gate record: rejected: " in reason
    tip = git(loop, "rev-parse", f"refs/heads/promote/prod/{MODEL}-v{version}").strip()
    assert "Refinery-Reason: by refinery models promote --env prod, forced: CEO sign-off #7" in git(
        loop, "log", "-1", "--format=%B", tip
    )
    assert loop.registry.champions() == {"dev": version}


def test_an_unprotected_environment_is_promoted_at_once_from_another_one(
    tmp_path: Path, tiny_model_dir: Path, prepared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = loop_with_dev_champion(tmp_path, tiny_model_dir, prepared)
    dev_head = loop.head()

    assert cli(loop, "models promote", "--env", "prod") == 0

    out = capsys.readouterr().out
    assert f"promoted {MODEL} version 1 in prod: gitops commit {loop.head()[:12]}" in out
    assert loop.head() != dev_head and not git(loop, "for-each-ref", "refs/heads/promote/")
    assert loop.registry.champions() == {"dev": "1", "prod": "1"}
    prod_release = current_release(prod_cfg(loop))
    assert prod_release == current_release(loop.cfg.gitops) == release_of(loop, "1")
    tags = loop.registry.get("1").tags
    assert tags["prod.gitops_commit"] == loop.head() and tags["dev.gitops_commit"] == dev_head
    assert tags["prod.serving_image"] == tags["dev.serving_image"] == IMAGE
    # Promoting it again is no change; promoting dev's champion "to dev" names no other environment.
    assert cli(loop, "models promote", "--env", "prod") == 0
    assert cli(loop, "models promote", "--env", "dev") == 2
    assert "dev is both the source and the target" in capsys.readouterr().err
    # Rolling prod back needs an earlier prod champion: version 1 replaced none there.
    assert cli(loop, "models rollback", "--env", "prod") == 2
    assert "replaced no earlier champion in prod" in capsys.readouterr().err
    # Usage: --from belongs to --env, and a promotion without --env names its version.
    assert cli(loop, "models promote", "--from", "dev", "1") == 2
    assert cli(loop, "models promote") == 2
    assert "name the version to promote" in capsys.readouterr().err


def test_promotion_to_another_environment_needs_a_champion_to_promote(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = Loop(tmp_path, tiny_model_dir, tmp_path)
    assert cli(loop, "models promote", "--env", "prod", "--from", "staging") == 2
    assert f"staging serves no version of {MODEL} (no alias champion-staging" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- older registries


def make_legacy(loop: Loop) -> None:
    """Rewrite the loop's registry as refinery wrote it before champions were per environment: one plain
    `champion` alias and plain promotion tags."""
    from mlflow import MlflowClient

    uri = loop.cfg.registry.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for environment, version in loop.registry.champions().items():
        assert environment == "dev"
        client.set_registered_model_alias(MODEL, "champion", version)
        client.delete_registered_model_alias(MODEL, "champion-dev")
    for info in loop.registry.versions():
        for key, value in info.tags.items():
            if key.startswith("dev."):
                client.set_model_version_tag(MODEL, info.version, key.removeprefix("dev."), value)
                client.delete_model_version_tag(MODEL, info.version, key)


def test_a_plain_champion_alias_is_read_as_the_configured_environments_and_sync_moves_it(
    tmp_path: Path, tiny_model_dir: Path, prepared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = loop_with_dev_champion(tmp_path, tiny_model_dir, prepared)
    make_legacy(loop)
    assert loop.aliases()["1"] == ("challenger", "champion")

    # Read as dev's champion (the configured environment), never as another environment's.
    assert loop.registry.champion("dev", legacy=True).version == "1"  # type: ignore[union-attr]
    assert loop.registry.champion("prod") is None
    assert cli(loop, "models show", "@champion-prod") == 2
    for reference in ([], ["@champion-dev"]):
        assert cli(loop, "models show", *reference) == 0
        assert capsys.readouterr().out.startswith(f"{MODEL} version 1 ")

    results = {r.environment: r for r in sync_aliases(loop.cfg)}

    assert results["dev"].outcome == "migrated" and results["dev"].changed
    assert "champion-dev now names version 1 (was the plain 'champion')" in results["dev"].message
    assert results["prod"].outcome == "unreleased"
    assert loop.aliases()["1"] == ("challenger", "champion-dev")
    assert [r.outcome for r in sync_aliases(loop.cfg, ["dev"])] == ["in_sync"]
    # The plain records still serve dev: rolling back reads replaced_champion (none here).
    assert cli(loop, "models rollback") == 2
    assert "version 1 of review-sentiment-test replaced no earlier champion in dev" in capsys.readouterr().err


def test_a_promotion_judged_against_a_plain_champion_retires_it(
    tmp_path: Path, tiny_model_dir: Path, prepared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = loop_with_dev_champion(tmp_path, tiny_model_dir, prepared)
    make_legacy(loop)

    # The pipeline's evaluate step compares against the plain alias's version: it is dev's champion.
    version, bento = loop.candidate("run2")
    assert loop.registry.get(version).tags["compared_with_champion"] == "1"
    loop.promote(version, bento)

    assert loop.aliases() == {"1": (), version: ("challenger", "champion-dev")}
    assert loop.registry.get(version).tags["dev.replaced_champion"] == "1"
    assert loop.assert_consistent() == version
    # And back: the rollback reads the old version's plain serving_image record.
    assert cli(loop, "models rollback", "--reason", "upgrade check") == 0
    assert loop.assert_consistent() == "1"


# --------------------------------------------------------------------------------------- the cluster

DEV_CONFIGMAP, PROD_CONFIGMAP = "refinery-release-5f8k2h7c9t", "refinery-release-9b7m4d2f6g"


def test_status_reads_each_environments_running_deployment_through_the_kubernetes_api(
    tmp_path: Path, tiny_model_dir: Path, prepared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = loop_with_dev_champion(tmp_path, tiny_model_dir, prepared)
    assert cli(loop, "models promote", "--env", "prod") == 0
    capsys.readouterr()
    state = read_state(loop.cfg.gitops)
    namespaces = {o.environment: o.namespace for o in state.overlays}
    assert namespaces["dev"] == "refinery-dev" and namespaces["prod"] == "refinery-prod"

    with StandInKubernetesApi() as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", unreachable_port=free_port())
        api.put(deployment("refinery-dev", DEV_CONFIGMAP, replicas=1, updated=1, available=1))
        api.put(release_configmap("refinery-dev", DEV_CONFIGMAP, MODEL, "1"))
        # Prod still runs what was there before the promotion: Argo CD syncs it by hand.
        api.put(deployment("refinery-prod", PROD_CONFIGMAP, replicas=3, updated=3, available=3))
        api.put(release_configmap("refinery-prod", PROD_CONFIGMAP, "none", "none"))

        assert cli(loop, "status", "--kubeconfig", str(kubeconfig)) == 0
        out = capsys.readouterr().out
        assert "dev: alias v1, overlay v1 (commit " in out
        assert "running v1 (1/1 updated, 1/1 available) - in sync" in out
        assert "running nothing released (3/3 updated, 3/3 available) - MISMATCH" in out
        assert (
            "prod: the overlay names v1 but refinery-prod/refinery-serving runs nothing released (Argo CD"
            " has not synced the overlay yet)"
        ) in out

        # Someone presses Sync: the new ConfigMap, one of three pods updated so far.
        new = "refinery-release-c4t8p2x6mb"
        api.put(release_configmap("refinery-prod", new, MODEL, "1"))
        api.put(
            deployment("refinery-prod", new, replicas=3, updated=1, available=2, generation=3, observed=3)
        )
        assert cli(loop, "status", "--kubeconfig", str(kubeconfig), "--context", "stand-in") == 0
        out = capsys.readouterr().out
        assert "running v1 (rolling out: 1/3 updated, 2/3 available) - MISMATCH" in out
        assert "prod: refinery-prod/refinery-serving is rolling out: 1/3 updated, 2/3 available of v1" in out

        api.put(
            deployment("refinery-prod", new, replicas=3, updated=3, available=3, generation=3, observed=3)
        )
        assert cli(loop, "status", "--kubeconfig", str(kubeconfig)) == 0
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("dev", "prod"))]
        assert lines == [
            f"dev: alias v1, overlay v1 (commit {loop.registry.get('1').tags['dev.gitops_commit'][:12]}), running"
            " v1 (1/1 updated, 1/1 available) - in sync",
            f"prod: alias v1, overlay v1 (commit {loop.head()[:12]}), running v1 (3/3 updated, 3/3 available)"
            " - in sync",
        ]
        # Only reads, each with the kubeconfig's token.
        assert {method for method, _, _ in api.requests} == {"GET"}
        assert {auth for _, _, auth in api.requests} == {f"Bearer {api.TOKEN}"}
        assert f"/api/v1/namespaces/refinery-prod/configmaps/{new}" in {path for _, path, _ in api.requests}

        # A namespace without the Deployment is named; an unreachable API server exits 3 (a service
        # unreachable), a kubeconfig that cannot be used 2 (a usage error).
        del api.objects["/apis/apps/v1/namespaces/refinery-dev/deployments/refinery-serving"]
        assert cli(loop, "status", "--kubeconfig", str(kubeconfig)) == 0
        assert "dev: cluster: no Deployment refinery-dev/refinery-serving" in capsys.readouterr().out
        assert cli(loop, "status", "--kubeconfig", str(kubeconfig), "--context", "elsewhere") == 3
        assert "Kubernetes API at http://127.0.0.1:" in capsys.readouterr().err
    assert cli(loop, "status", "--kubeconfig", str(tmp_path / "nope")) == 2
    assert f"kubeconfig {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert cli(loop, "status", "--kubeconfig", str(kubeconfig), "--context", "missing") == 2
    assert "cannot use context 'missing' of kubeconfig" in capsys.readouterr().err
    assert cli(loop, "status", "--context", "stand-in") == 2
    assert "--context names a context of --kubeconfig" in capsys.readouterr().err
