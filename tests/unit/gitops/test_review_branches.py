"""Promotions to a protected environment: review branches, reading every overlay, compare links.

Real bare repositories under tmp_path, as in test_gitops_repo.py; a reviewer's merge is a plain
`git merge` in a clone of their own, pushed back.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.unit.gitops.test_gitops_repo import V3, V4, _no_git_config, cfg, commit_count, git, head, release

from refinery.config import GitOpsConfig
from refinery.errors import GitOpsError, PromotionConflict
from refinery.gitops.repo import (
    compare_url,
    current_release,
    ensure_repository,
    merge_hint,
    promote,
    propose,
    read_state,
    review_branch,
)

__all__ = ["_no_git_config", "cfg"]  # fixtures used here

PROD_OVERLAY = "k8s/overlays/prod/kustomization.yaml"
BRANCH_V3 = "promote/prod/review-sentiment-v3"


@pytest.fixture
def prod(cfg: GitOpsConfig) -> GitOpsConfig:
    """The same repository, promoting to prod, which is protected."""
    return cfg.model_copy(update={"environment": "prod", "protected_environments": ("prod",)})


def merge(repository: str, branch: str, work: Path, *, squash: bool = False) -> str:
    """What a reviewer does: merge the branch into main in a clone of their own and push; the new head."""
    env = {
        "GIT_AUTHOR_NAME": "Reviewer",
        "GIT_AUTHOR_EMAIL": "reviewer@refinery.test",
        "GIT_COMMITTER_NAME": "Reviewer",
        "GIT_COMMITTER_EMAIL": "reviewer@refinery.test",
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "HOME": str(work.parent),
    }

    def run(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=work, env=env, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    subprocess.run(["git", "clone", "-q", repository, str(work)], check=True, env=env, timeout=60)
    if squash:
        run("merge", "--squash", f"origin/{branch}")
        run("commit", "-q", "-m", f"squash {branch}")
    else:
        run("merge", "-q", "--no-ff", "-m", f"Merge {branch}", f"origin/{branch}")
    run("push", "-q", "origin", "main")
    return run("rev-parse", "HEAD").strip()


def test_a_proposal_pushes_a_review_branch_and_leaves_main_alone(prod: GitOpsConfig) -> None:
    ensure_repository(prod)
    base = head(prod)

    result = propose(prod, V3, expected=(None, "3"), reason="gate passed")

    assert result.branch == review_branch("prod", V3) == BRANCH_V3
    assert not result.merged and result.changed and result.changed_files == (PROD_OVERLAY,)
    assert (result.base, head(prod), commit_count(prod)) == (base, base, 1)
    assert git(prod.repository, "rev-parse", f"refs/heads/{BRANCH_V3}").strip() == result.commit
    assert git(prod.repository, "rev-parse", f"{result.commit}^").strip() == base
    assert git(prod.repository, "diff", "--name-only", base, result.commit).split() == [PROD_OVERLAY]
    message = git(prod.repository, "log", "-1", "--format=%B", result.commit)
    assert message.startswith("promote review-sentiment v3 to prod (bento review-sentiment:abc123)")
    assert f"Refinery-Review-Branch: {BRANCH_V3}" in message
    assert current_release(prod) is None, "main's prod overlay is unchanged"
    # A local repository has no web page: the hint is the reviewer's git commands.
    assert result.compare_url is None
    assert result.merge_hint == (
        f"git clone {prod.repository} gitops-review && cd gitops-review && "
        f"git merge --no-ff origin/{BRANCH_V3} && git push origin main"
    )


def test_a_retried_proposal_finds_its_branch_and_pushes_nothing(prod: GitOpsConfig) -> None:
    first = propose(prod, V3)
    again = propose(prod, V3)
    assert again.commit == first.commit and not again.changed and not again.merged
    assert git(prod.repository, "rev-parse", f"refs/heads/{BRANCH_V3}").strip() == first.commit


def test_once_merged_main_names_the_release_and_a_proposal_is_merged(
    prod: GitOpsConfig, tmp_path: Path
) -> None:
    proposal = propose(prod, V3)
    merged_head = merge(prod.repository, BRANCH_V3, tmp_path / "review")

    assert current_release(prod) == V3
    again = propose(prod, V3)
    assert again.merged and not again.changed and again.commit == merged_head

    state = read_state(prod)
    overlay = state.overlay("prod")
    assert overlay is not None and overlay.release == V3
    # The overlay's last change is the branch's commit (the merge commit only brings it in).
    assert overlay.commit == proposal.commit
    assert overlay.namespace == "refinery-prod"
    assert state.head == merged_head
    [branch] = state.review_branches
    assert (branch.name, branch.environment, branch.release, branch.merged) == (
        BRANCH_V3,
        "prod",
        V3,
        True,
    )
    assert state.pending("prod") == []


def test_read_state_lists_every_overlay_and_the_pending_branches(
    prod: GitOpsConfig, cfg: GitOpsConfig
) -> None:
    dev_commit = promote(cfg, V4).commit
    proposal = propose(prod, V3)

    state = read_state(cfg)

    assert {"dev", "prod"} <= {o.environment for o in state.overlays}
    dev = state.overlay("dev")
    assert dev is not None and dev.release == V4 and dev.commit == dev_commit and not dev.error
    assert dev.namespace == "refinery-dev"
    prod_overlay = state.overlay("prod")
    assert prod_overlay is not None and prod_overlay.release is None
    assert state.overlay("staging-never") is None
    [pending] = state.pending("prod")
    assert (pending.name, pending.commit, pending.release, pending.merged) == (
        BRANCH_V3,
        proposal.commit,
        V3,
        False,
    )
    assert state.pending("dev") == []
    # A URL is read through a clone: the same answer.
    remote = read_state(cfg.model_copy(update={"repository": f"file://{cfg.repository}"}))
    assert remote.overlays == state.overlays and remote.review_branches == state.review_branches


def test_a_squash_merged_branch_no_longer_waits(prod: GitOpsConfig, tmp_path: Path) -> None:
    propose(prod, V3)
    merge(prod.repository, BRANCH_V3, tmp_path / "review", squash=True)
    [branch] = read_state(prod).review_branches
    assert branch.merged and read_state(prod).pending("prod") == []


def test_a_stale_unmerged_branch_is_refused_naming_it(prod: GitOpsConfig, cfg: GitOpsConfig) -> None:
    stale = propose(prod, V3)
    promote(cfg, V4)  # main moves on (dev), the review branch of v3 is left behind unmerged

    with pytest.raises(GitOpsError, match=rf"branch {BRANCH_V3} already exists at {stale.commit[:12]}"):
        propose(prod, V3)
    assert git(prod.repository, "rev-parse", f"refs/heads/{BRANCH_V3}").strip() == stale.commit


@pytest.mark.parametrize("url", [False, True], ids=["path", "url"])
def test_a_merged_branch_is_moved_forward_by_a_new_promotion_of_its_version(
    prod: GitOpsConfig, tmp_path: Path, url: bool
) -> None:
    """v3 was promoted and merged, then v4 replaced it; promoting v3 again reuses its branch name."""
    bare = ensure_repository(prod)
    if url:  # a remote is cloned, not read in place
        prod = prod.model_copy(update={"repository": f"file://{bare}"})
    propose(prod, V3)
    merge(bare, BRANCH_V3, tmp_path / "review-1")
    v4 = propose(prod, V4, expected=("3",))
    merge(bare, v4.branch, tmp_path / "review-2")

    again = propose(prod, V3, expected=("4",), action="rollback")

    assert again.changed and not again.merged
    assert git(bare, "rev-parse", f"refs/heads/{BRANCH_V3}").strip() == again.commit
    assert current_release(prod) == V4
    assert propose(prod, V3, expected=("4",), action="rollback").commit == again.commit


def test_a_proposal_against_another_release_is_refused(prod: GitOpsConfig, cfg: GitOpsConfig) -> None:
    promote(prod.model_copy(update={"protected_environments": ()}), V4)
    with pytest.raises(
        PromotionConflict, match=r"names version 4 at .*expected nothing released or version 3"
    ):
        propose(prod, V3, expected=(None, "3"))
    assert git(prod.repository, "for-each-ref", "refs/heads/promote/").strip() == ""


@pytest.mark.parametrize(
    ("repository", "template", "link"),
    [
        (
            "git@github.com:acme/refinery-gitops.git",
            None,
            "https://github.com/acme/refinery-gitops/compare/main...promote/prod/review-sentiment-v3",
        ),
        (
            "https://x-access-token:s3cret@github.com/acme/refinery-gitops.git",
            None,
            "https://github.com/acme/refinery-gitops/compare/main...promote/prod/review-sentiment-v3",
        ),
        (
            "ssh://git@gitlab.example.com:2222/ml/platform/gitops.git",
            None,
            "https://gitlab.example.com/ml/platform/gitops/-/compare/main...promote/prod/review-sentiment-v3",
        ),
        ("https://git.example/acme/gitops.git", None, None),
        (
            "https://git.example/acme/gitops.git",
            "https://git.example/acme/gitops/compare/{base}..{branch}",
            "https://git.example/acme/gitops/compare/main..promote/prod/review-sentiment-v3",
        ),
        ("/srv/gitops.git", None, None),
        ("file:///srv/gitops.git", None, None),
    ],
)
def test_the_compare_link_is_derived_from_the_repository_or_the_template(
    repository: str, template: str | None, link: str | None
) -> None:
    cfg = GitOpsConfig(repository=repository, environment="prod", compare_url=template)
    assert compare_url(cfg, review_branch("prod", V3)) == link
    assert "s3cret" not in merge_hint(cfg, BRANCH_V3)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("https://git.example/compare/{base}", "must name the branch as {branch}"),
        ("https://git.example/compare/{branch}/{user}", "not \\['user'\\]"),
    ],
)
def test_a_compare_template_without_the_branch_is_refused(template: str, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        GitOpsConfig(compare_url=template)


def test_protected_environments_must_be_environment_names() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="are not environment names"):
        GitOpsConfig(protected_environments=("Prod",))
    assert GitOpsConfig(environment="prod", protected_environments=("prod",)).protected()
    assert not GitOpsConfig(protected_environments=("prod",)).protected()


def test_a_version_other_than_the_release_is_its_own_branch() -> None:
    assert review_branch("staging", release("12", "b12")) == "promote/staging/review-sentiment-v12"


def test_a_protected_environment_is_never_committed_to_directly(prod: GitOpsConfig) -> None:
    ensure_repository(prod)
    before = head(prod)
    with pytest.raises(GitOpsError, match="'prod' is protected"):
        promote(prod, V3)
    assert head(prod) == before
