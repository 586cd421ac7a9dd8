"""GitOps promotion against real git repositories under tmp_path (no network, no global git config)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from refinery.config import GitOpsConfig
from refinery.errors import GitOpsError
from refinery.gitops.repo import PromotionResult, Release, current_release, ensure_repository, promote

REPO_ROOT = Path(__file__).resolve().parents[3]
SEED = REPO_ROOT / "k8s"
DEV_OVERLAY = "k8s/overlays/dev/kustomization.yaml"
IMAGE = "registry.test/ml/refinery@sha256:" + hashlib.sha256(b"image").hexdigest()


def release(version: str, build: str, image: str = IMAGE) -> Release:
    """Version ``version`` of review-sentiment, its Bento ``build`` in an S3 store, served by ``image``."""
    return Release(
        "review-sentiment",
        version,
        f"review-sentiment:{build}",
        f"s3://bentos/review-sentiment/{build}.bento",
        hashlib.sha256(build.encode()).hexdigest(),
        image,
    )


V3 = release("3", "abc123")
V4 = release("4", "def456")
V5 = release("5", "build5")
V6 = release("6", "build6")


@pytest.fixture(autouse=True)
def _no_git_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as on a fresh machine: no user or system git configuration (promote must not need any)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def cfg(tmp_path: Path) -> GitOpsConfig:
    return GitOpsConfig(
        repository=str(tmp_path / "gitops.git"),
        seed_dir=str(SEED),
        author_name="Refinery Bot",
        author_email="bot@refinery.test",
    )


def git(repo: str | Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "--git-dir", str(repo), *args], capture_output=True, text=True, check=True, timeout=60
    )
    return proc.stdout


def head(cfg: GitOpsConfig) -> str:
    return git(cfg.repository, "rev-parse", f"refs/heads/{cfg.branch}").strip()


def commit_count(cfg: GitOpsConfig) -> int:
    return int(git(cfg.repository, "rev-list", "--count", cfg.branch))


def checkout(cfg: GitOpsConfig, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(cfg.repository), str(dest)], check=True, timeout=60)
    return dest


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (CI installs it); cannot render the promoted overlay")
    proc = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_first_use_creates_bare_repository_seeded_from_k8s(cfg: GitOpsConfig, tmp_path: Path) -> None:
    assert not Path(cfg.repository).exists()
    location = ensure_repository(cfg)
    assert location == cfg.repository
    assert git(location, "rev-parse", "--is-bare-repository").strip() == "true"
    assert git(location, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert commit_count(cfg) == 1
    assert git(location, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "main").strip() == (
        "Refinery Bot <bot@refinery.test>|Refinery Bot <bot@refinery.test>"
    )
    seed_files = sorted(f"k8s/{p.relative_to(SEED).as_posix()}" for p in SEED.rglob("*") if p.is_file())
    assert git(location, "ls-tree", "-r", "--name-only", "main").split() == seed_files
    for name in seed_files:
        assert git(location, "show", f"main:{name}") == (REPO_ROOT / name).read_text(), name
    # The repository was built beside its final path and renamed: nothing else is left in tmp_path.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gitops.git"]


def test_ensure_repository_is_idempotent(cfg: GitOpsConfig) -> None:
    ensure_repository(cfg)
    first = head(cfg)
    assert ensure_repository(cfg) == cfg.repository
    assert head(cfg) == first


def test_an_empty_bare_repository_is_seeded(cfg: GitOpsConfig) -> None:
    subprocess.run(["git", "init", "-q", "--bare", cfg.repository], check=True)
    ensure_repository(cfg)
    assert commit_count(cfg) == 1
    assert current_release(cfg) is None


def test_a_folder_that_is_not_a_bare_repository_is_refused(cfg: GitOpsConfig) -> None:
    Path(cfg.repository).mkdir()
    (Path(cfg.repository) / "notes.txt").write_text("mine\n")
    with pytest.raises(GitOpsError, match=r"gitops\.git exists but is not a bare git repository"):
        ensure_repository(cfg)
    assert sorted(p.name for p in Path(cfg.repository).iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("competitor", ["repository", "other files"])
def test_a_repository_created_meanwhile_by_another_process_is_used_or_refused(
    cfg: GitOpsConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, competitor: str
) -> None:
    """Two first uses race: ours loses the final rename. Another refinery's repository is used as it
    is; anything else at the path is refused. Either way our staging folder is gone."""
    from refinery.gitops import seed

    real_seed = seed._seed
    target = Path(cfg.repository)

    def seed_then_lose_the_race(cfg: GitOpsConfig, bare: Path, reported_as: Path | None = None) -> None:
        real_seed(cfg, bare, reported_as)
        if competitor == "repository":
            shutil.copytree(bare, target)  # the other process's repository: same seed, its own commit
        else:
            target.mkdir()
            (target / "notes.txt").write_text("not a repository")

    monkeypatch.setattr(seed, "_seed", seed_then_lose_the_race)
    if competitor == "repository":
        assert ensure_repository(cfg) == cfg.repository
        assert commit_count(cfg) == 1
    else:
        with pytest.raises(GitOpsError, match=r"cannot create GitOps repository .*gitops\.git"):
            ensure_repository(cfg)
        assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gitops.git"]


def test_a_seed_without_overlays_is_refused_and_leaves_nothing(cfg: GitOpsConfig, tmp_path: Path) -> None:
    bad = cfg.model_copy(update={"seed_dir": str(tmp_path / "empty-seed")})
    with pytest.raises(GitOpsError, match=r"seed_dir .*empty-seed has no overlays/ folder"):
        ensure_repository(bad)
    assert list(tmp_path.iterdir()) == []


def test_fresh_repository_has_no_release(cfg: GitOpsConfig) -> None:
    assert current_release(cfg) is None
    assert current_release(cfg.model_copy(update={"environment": "prod"})) is None


def test_promote_makes_one_commit_changing_only_the_overlay(cfg: GitOpsConfig, tmp_path: Path) -> None:
    ensure_repository(cfg)
    before = head(cfg)

    result = promote(cfg, V3)

    assert isinstance(result, PromotionResult)
    assert result.commit == head(cfg)
    assert result.changed and result.changed_files == (DEV_OVERLAY,)
    assert (result.environment, result.repository, result.release) == ("dev", cfg.repository, V3)
    assert commit_count(cfg) == 2
    assert git(cfg.repository, "rev-parse", f"{result.commit}^").strip() == before
    assert git(cfg.repository, "diff", "--name-only", before, result.commit).split() == [DEV_OVERLAY]
    # Only the release lines move: the five literals, and the image entry the first promotion adds (the
    # seed is in canonical form).
    added, removed, _ = git(cfg.repository, "diff", "--numstat", before, result.commit).split()
    assert (added, removed) == ("9", "5")
    subject, _, body = git(cfg.repository, "log", "-1", "--format=%B", result.commit).partition("\n")
    assert subject == "promote review-sentiment v3 to dev (bento review-sentiment:abc123)"
    assert f"Refinery-Image: {IMAGE}" in body
    assert "Refinery-Bento-Uri: s3://bentos/review-sentiment/abc123.bento" in body
    assert "Refinery-Previous-Release: nothing released" in body
    assert git(cfg.repository, "log", "-1", "--format=%an <%ae>", result.commit).strip() == (
        "Refinery Bot <bot@refinery.test>"
    )
    written = result.write_json(tmp_path / "promotion.json")
    assert yaml.safe_load(written.read_text())["release"]["bento_tag"] == "review-sentiment:abc123"


def test_promoted_overlay_renders_and_names_the_release(cfg: GitOpsConfig, tmp_path: Path) -> None:
    promote(cfg, V3)
    tree = checkout(cfg, tmp_path / "checkout")
    objects = kustomize(tree / "k8s" / "overlays" / "dev")
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    serving = deployment["spec"]["template"]["spec"]["containers"][0]
    # Pinned by digest: the cluster pulls exactly the image the registry held at promotion.
    assert serving["image"] == IMAGE
    assert serving["envFrom"][0] == {"configMapRef": {"name": config_map["metadata"]["name"]}}
    assert config_map["data"] == {
        "REFINERY_MODEL_NAME": "review-sentiment",
        "REFINERY_MODEL_VERSION": "3",
        "REFINERY_BENTO_TAG": "review-sentiment:abc123",
        "REFINERY_BENTO_URI": "s3://bentos/review-sentiment/abc123.bento",
        "REFINERY_BENTO_SHA256": V3.bento_sha256,
        "REFINERY_ENVIRONMENT": "dev",
    }
    prod = kustomize(tree / "k8s" / "overlays" / "prod")
    prod_deployment = next(o for o in prod if o["kind"] == "Deployment")
    # Never promoted: the base's placeholder name, which no registry holds.
    assert prod_deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "refinery-serving"


def test_a_local_image_is_named_by_tag_and_a_registry_image_replaces_it_by_digest(cfg: GitOpsConfig) -> None:
    local = release("3", "abc123", image="localhost/refinery:0.1.0-abc")
    promote(cfg, local)
    overlay = yaml.safe_load(git(cfg.repository, "show", f"main:{DEV_OVERLAY}"))
    assert overlay["images"] == [
        {"name": "refinery-serving", "newName": "localhost/refinery", "newTag": "0.1.0-abc"}
    ]
    assert current_release(cfg) == local
    promote(cfg, V4)
    overlay = yaml.safe_load(git(cfg.repository, "show", f"main:{DEV_OVERLAY}"))
    name, _, digest = IMAGE.partition("@")
    assert overlay["images"] == [{"name": "refinery-serving", "newName": name, "digest": digest}]


def test_current_release_round_trips_per_environment(cfg: GitOpsConfig) -> None:
    prod = cfg.model_copy(update={"environment": "prod"})
    promote(cfg, V3)
    promote(prod, V3)
    promote(cfg, V4)
    assert current_release(cfg) == V4
    assert current_release(prod) == V3
    assert commit_count(cfg) == 4
    # A URL is read through a clone rather than `git show`: same answer.
    assert current_release(cfg.model_copy(update={"repository": f"file://{cfg.repository}"})) == V4
    prod_file = git(cfg.repository, "show", "main:k8s/overlays/prod/kustomization.yaml")
    name, _, digest = IMAGE.partition("@")
    assert yaml.safe_load(prod_file)["images"] == [
        {"name": "refinery-serving", "newName": name, "digest": digest}
    ]
    # The explanatory comment block at the top of the overlay survives the rewrite.
    assert prod_file.startswith("# Production environment.")


def test_promoting_the_current_release_makes_no_commit(cfg: GitOpsConfig) -> None:
    first = promote(cfg, V3)
    again = promote(cfg, V3)
    assert again.commit == first.commit == head(cfg)
    assert again.changed_files == () and not again.changed
    assert commit_count(cfg) == 2


def test_unknown_environment_lists_the_available_ones(cfg: GitOpsConfig) -> None:
    qa = cfg.model_copy(update={"environment": "qa"})
    message = r"no environment 'qa' .*available environments: dev, prod, staging"
    with pytest.raises(GitOpsError, match=message):
        promote(qa, V3)
    with pytest.raises(GitOpsError, match=message):
        current_release(qa)
    assert commit_count(cfg) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bento_tag": "abc123"}, "must be NAME:VERSION"),
        ({"bento_tag": "review-sentiment:latest"}, "must be NAME:VERSION with a concrete VERSION"),
        ({"model_version": "none"}, "model_version 'none'"),
        ({"model_name": "review sentiment"}, "model_name 'review sentiment'"),
        ({"bento_sha256": "abc"}, "bento_sha256 'abc' must be 64 hexadecimal digits"),
        ({"bento_uri": ""}, "bento_uri '' must be a URI"),
        ({"image": "registry.test/ml/refinery:latest"}, "must be pinned by digest"),
        ({"image": "registry.test/ml/refinery"}, "must be pinned by digest"),
        ({"image": "registry.test/ml/refinery@sha256:abc"}, "malformed digest"),
    ],
)
def test_malformed_release_is_refused(cfg: GitOpsConfig, changes: dict[str, str], message: str) -> None:
    from dataclasses import replace

    with pytest.raises(GitOpsError, match=message):
        promote(cfg, replace(V3, **changes))
    assert not Path(cfg.repository).exists()


@pytest.mark.parametrize(
    ("location", "remote"),
    [
        ("git@github.com:acme/refinery-gitops.git", True),
        ("github.com:acme/refinery-gitops.git", True),
        ("ssh://git@github.com:22/acme/refinery-gitops.git", True),
        ("https://git.example/acme/gitops.git", True),
        ("file:///srv/gitops.git", True),
        ("/srv/gitops.git", False),
        ("relative/gitops.git", False),
    ],
)
def test_scp_like_and_url_remotes_are_told_from_local_paths(location: str, remote: bool) -> None:
    """One rule, git's, for the configuration (resolve, the cluster check) and for GitOps."""
    from refinery.config import is_git_remote

    assert is_git_remote(location) is remote


def test_an_scp_like_remote_is_never_created_as_a_local_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git@host:path used to be taken for a path, and a folder named `git@host:acme` was made."""
    monkeypatch.chdir(tmp_path)
    remote = GitOpsConfig(repository="git@unreachable.invalid:acme/gitops.git", seed_dir=str(SEED))
    with pytest.raises(GitOpsError, match=r"git@unreachable.invalid:acme/gitops.git is not reachable"):
        ensure_repository(remote)
    assert list(tmp_path.iterdir()) == []


def test_an_ssh_key_without_known_hosts_is_refused(
    cfg: GitOpsConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFINERY_GIT_SSH_KEY", "-----BEGIN OPENSSH PRIVATE KEY-----\n...")
    monkeypatch.delenv("REFINERY_GIT_KNOWN_HOSTS", raising=False)
    with pytest.raises(GitOpsError, match="REFINERY_GIT_KNOWN_HOSTS is empty"):
        ensure_repository(cfg)


def test_unreachable_remote_names_repository_and_git_error(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/missing.git"
    remote = GitOpsConfig(repository=url, seed_dir=str(SEED))
    for call in (
        lambda: ensure_repository(remote),
        lambda: promote(remote, V3),
        lambda: current_release(remote),
    ):
        with pytest.raises(GitOpsError) as info:
            call()
        assert f"GitOps repository {url} is not reachable" in str(info.value)
        assert "git ls-remote" in str(info.value)
        assert "does not appear to be a git repository" in str(info.value)


def test_remote_without_the_branch_is_refused(cfg: GitOpsConfig) -> None:
    ensure_repository(cfg)
    remote = cfg.model_copy(update={"repository": f"file://{cfg.repository}", "branch": "release"})
    with pytest.raises(GitOpsError, match="has no branch 'release'"):
        promote(remote, V3)


def test_promote_to_a_url_pushes_there(cfg: GitOpsConfig) -> None:
    ensure_repository(cfg)
    remote = cfg.model_copy(update={"repository": f"file://{cfg.repository}"})
    result = promote(remote, V3)
    assert result.repository == remote.repository
    assert result.commit == head(cfg)
    assert current_release(cfg) == V3


_PROMOTER = """
import sys
from tests.unit.gitops.test_gitops_repo import release
from refinery.config import GitOpsConfig
from refinery.gitops.repo import promote
cfg = GitOpsConfig(repository=sys.argv[1], seed_dir=sys.argv[2])
version = sys.argv[3]
print(promote(cfg, release(version, f"build{version}")).commit)
"""

# Runs in every clone the promoters make. Each promoter's first clone waits until both have cloned, so
# both edit the same head and exactly one of the two pushes must lose the race.
_BARRIER_HOOK = """#!/bin/sh
[ -n "$REFINERY_TEST_BARRIER" ] || exit 0
touch "$REFINERY_TEST_BARRIER/clone.$$"
i=0
while [ "$(ls "$REFINERY_TEST_BARRIER" | wc -l)" -lt 2 ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
"""


def test_concurrent_promotions_both_land(cfg: GitOpsConfig, tmp_path: Path) -> None:
    ensure_repository(cfg)
    seed_commit = head(cfg)
    hooks = tmp_path / "template" / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "post-checkout").write_text(_BARRIER_HOOK)
    (hooks / "post-checkout").chmod(0o755)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "GIT_TEMPLATE_DIR": str(hooks.parent), "REFINERY_TEST_BARRIER": str(barrier)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROMOTER, cfg.repository, cfg.seed_dir, version],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in ("5", "6")
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]

    commits = [out.strip() for out, _ in outputs]
    history = git(cfg.repository, "rev-list", "--parents", "main").splitlines()
    assert len(history) == 3, "both promotions are commits on top of the seed"
    # Linear history: the later promotion was redone on top of the earlier one, not merged or forced.
    newest, middle, seed = (line.split() for line in history)
    assert seed == [seed_commit]
    assert middle[1:] == [seed_commit] and newest[1:] == [middle[0]]
    assert sorted(commits) == sorted([newest[0], middle[0]])
    subjects = git(cfg.repository, "log", "--format=%s", "main").splitlines()
    assert sorted(s for s in subjects if s.startswith("promote")) == [
        "promote review-sentiment v5 to dev (bento review-sentiment:build5)",
        "promote review-sentiment v6 to dev (bento review-sentiment:build6)",
    ]
    # Two first clones met at the barrier; the loser cloned a third time to redo its edit.
    assert len(list(barrier.iterdir())) == 3
    winner_last = git(cfg.repository, "log", "-1", "--format=%s", "main")
    assert current_release(cfg) == (V5 if "v5" in winner_last else V6)


def test_no_temporary_folder_is_left_behind(
    cfg: GitOpsConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    promote(cfg, V3)
    promote(cfg, V3)
    current_release(cfg.model_copy(update={"repository": f"file://{cfg.repository}"}))
    with pytest.raises(GitOpsError):
        promote(cfg.model_copy(update={"environment": "qa"}), V4)
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gitops.git", "scratch"]
