"""The project image `make image` builds (Containerfile), checked by running it with podman.

The image under test is the one this checkout names (`refinery images`: localhost/refinery:<version>-<sha>);
the tests fail, naming it, when it has not been built, and are skipped only where podman is not installed.
Containers run without a network: the image must work offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import REPO_ROOT

from refinery.version import Images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed"),
]

# Debian 12's podman needs this configuration (runc, cgroupfs); the Makefile exports it for every target.
CONTAINERS_CONF = REPO_ROOT / "containers" / "containers.conf"
NON_ROOT_UID = 10001


def _podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _run(image: str, *args: str, entrypoint: str | None = None) -> str:
    """stdout of a throwaway container; fails the test with podman's stderr when it exits non-zero."""
    opts = ["--rm", "--network=none"] + ([f"--entrypoint={entrypoint}"] if entrypoint else [])
    proc = _podman("run", *opts, image, *args)
    assert proc.returncode == 0, (
        f"podman run {image} {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
    )
    return proc.stdout


@pytest.fixture(scope="module")
def image() -> str:
    name = Images.default().project
    if _podman("image", "exists", name).returncode != 0:
        pytest.fail(f"the project image {name} does not exist: build it with `make image`")
    return name


def test_entrypoint_is_refinery(image: str) -> None:
    out = _run(image, "--help")
    assert out.startswith("usage: refinery"), out
    assert "images" in out


def test_default_user_is_not_root(image: str) -> None:
    assert int(_run(image, "-u", entrypoint="id").strip()) == NON_ROOT_UID
    # Numeric in the image config, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    user = _podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    assert user.split(":")[0] == str(NON_ROOT_UID)


def test_image_knows_the_tag_it_was_built_under(image: str) -> None:
    """REFINERY_GIT_SHA is baked in: inside, `refinery images` names the image itself, as the host does."""
    host = subprocess.run(
        [str(Path(sys.executable).with_name("refinery")), "images"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    inside = _run(image, "images")
    assert inside == host
    assert f"project={image}\n" in inside


def test_final_stage_has_no_compilers_or_build_certificates(image: str) -> None:
    found = _run(
        image,
        "-c",
        "for tool in gcc cc c++ g++ clang ld make; do command -v $tool || true; done",
        entrypoint="sh",
    )
    assert found.strip() == "", f"build tools in the final image: {found.split()}"
    # The build machine's CA certificates are for pip in the build stages only.
    certs = _run(image, "/usr/local/share/ca-certificates", "-name", "*.crt", entrypoint="find")
    assert certs.strip() == ""


def test_torch_is_the_cpu_build(image: str) -> None:
    out = _run(
        image, "-c", "import torch; print(torch.__version__, torch.version.cuda)", entrypoint="python"
    ).split()
    assert out[0].endswith("+cpu") and out[1] == "None", out


def test_project_files_sit_in_the_working_directory(image: str) -> None:
    """packaging.service_dir ("serving") and gitops.seed_dir ("k8s") default to paths relative to it."""
    out = _run(
        image,
        "-c",
        "pwd; test -f serving/service.py && test -d k8s/base && test -d configs && echo present; "
        "touch serving/x 2>/dev/null || echo read-only; mkdir .refinery && echo writable",
        entrypoint="sh",
    )
    assert out.split() == ["/opt/refinery/app", "present", "read-only", "writable"]


def test_git_and_an_ssh_client_are_in_the_image(image: str) -> None:
    """The promote step pushes to the GitOps remote over https or ssh."""
    out = _run(image, "-c", "git --version; ssh -V 2>&1", entrypoint="sh")
    assert out.startswith("git version ") and "OpenSSH" in out


def test_serving_without_a_release_says_which_variables_are_missing(image: str) -> None:
    """The image serves the release its overlay names; without one it refuses, naming what is missing."""
    proc = _podman("run", "--rm", "--network=none", "--env", "BENTOML_HOME=/tmp/bentoml", image, "serve")
    assert proc.returncode == 2
    assert "REFINERY_BENTO_TAG, REFINERY_BENTO_URI, REFINERY_BENTO_SHA256 not set" in proc.stderr
