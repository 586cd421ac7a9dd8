"""Pipeline steps in containers: kfp.local's DockerRunner on a docker-compatible engine, failures reported.

``refinery run --runner docker`` runs every step in the project image through kfp.local's DockerRunner.
This module holds what that needs besides kfp:

* :func:`container_engine` uses the engine ``DOCKER_HOST`` names, or starts ``podman system service``
  for the duration of the run when it is unset.
* :func:`bind_mounts` lists the host paths an embedded configuration names (state folder, data, base
  model, registry, Bento store, service and GitOps folders: the locations
  :data:`refinery.config.LOCATIONS` declares), each mounted at the same path inside the container, so
  the configuration a step receives holds paths that work on both sides. A cluster configuration gets
  no mount at all: its steps share nothing but kfp's pipeline root (the stand-in for the cluster's
  artifact store, which kfp mounts itself) and the network services it names.
* :func:`docker_runner` runs each container as the invoking user (files written into the state folder
  belong to whoever ran ``refinery run``; the image's own user stays non-root for the cluster), with a
  writable ``HOME`` and the environment the subprocess runner gives its steps.
* :func:`reporting_exit_codes` fixes a defect of kfp 2.17's DockerRunner: it starts each container with
  ``auto_remove=True`` and asks for the exit code afterwards; an engine that has already removed the
  container (podman does) answers 404, which kfp reads as exit code 0, so a step that raised is reported
  as SUCCESS. While the context is active, :func:`run_container` runs the containers instead: it keeps
  each container until its exit code is read, then removes it.

Why the fix replaces a module function rather than subclassing: kfp.local looks its task handler up by
the runner's exact type (``task_dispatcher`` keys a dict on ``type(runner)``), so a DockerRunner subclass
is rejected and a handler subclass cannot be registered. ``DockerTaskHandler.run`` calls
``docker_task_handler.run_docker_container(client, image, command, volumes, **container_run_args)`` by
its module-global name, and kfp's own tests call that function directly: it is the narrowest seam. Its
signature is checked before it is replaced, so a kfp release that changes it fails loudly.
"""

from __future__ import annotations

import codecs
import contextlib
import getpass
import inspect
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refinery.config import LOCATIONS, Location, RunConfig
from refinery.errors import PipelineError
from refinery.podman import podman_env

# HOME inside step containers: the container's own /tmp, writable by any user and gone with the container.
CONTAINER_HOME = "/tmp"
# Host variables handed on to steps when set: the same offline switches the subprocess runner inherits.
PASSED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
# Paths that must never be bind-mounted over the image's own: the root, and the container's HOME.
_UNMOUNTABLE = frozenset({"/", CONTAINER_HOME})
# Label on every step container refinery starts, so that leftovers can be found (there should be none).
STEP_LABEL = "io.refinery.step"
# A unix socket path longer than this does not fit sockaddr_un (108 bytes with the terminator).
_MAX_SOCKET_PATH = 100
_ENGINE_START_TIMEOUT_S = 60.0


# ------------------------------------------------------------------------------------------ engine


@contextlib.contextmanager
def container_engine(state_dir: str | Path, *, podman: str = "podman") -> Iterator[str]:
    """Make a docker-compatible engine available through ``DOCKER_HOST`` for the duration of the block.

    When ``DOCKER_HOST`` is set it is used as it is. Otherwise ``podman system service`` is started on
    ``unix://<state_dir>/podman.sock`` (a short temporary folder when that path is too long for a
    socket), with ``CONTAINERS_CONF`` pointing at the repository's ``containers/containers.conf`` when
    that file exists and the variable is unset; ``DOCKER_HOST`` points at it until the block ends, when
    the service is stopped. Its output goes to ``<state_dir>/podman-service.log``.

    Args:
        state_dir: The run's state folder.
        podman: The podman executable.

    Yields:
        The ``DOCKER_HOST`` value the steps' containers are started through.

    Raises:
        PipelineError: No engine is set and podman is missing, or the service does not answer.
    """
    existing = os.environ.get("DOCKER_HOST")
    if existing:
        yield existing
        return
    executable = shutil.which(podman)
    if executable is None:
        raise PipelineError(
            "--runner docker needs a docker-compatible engine: set DOCKER_HOST, or install podman "
            "(refinery then starts `podman system service` for the run)"
        )
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    socket_dir = state
    short_dir = None
    if len(str(state / "podman.sock")) > _MAX_SOCKET_PATH:
        short_dir = Path(tempfile.mkdtemp(prefix="refinery-podman-"))
        socket_dir = short_dir
    socket = socket_dir / "podman.sock"
    socket.unlink(missing_ok=True)
    host = f"unix://{socket}"
    env = podman_env()
    log_path = state / "podman-service.log"
    with open(log_path, "ab") as log:
        service = subprocess.Popen(
            [executable, "system", "service", "--time=0", host],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Out of the terminal's process group: Ctrl-C stops the run, which then removes its
            # containers through this service before stopping it.
            start_new_session=True,
        )
    try:
        _wait_until_answering(host, service, log_path)
        with _environment_variable("DOCKER_HOST", host):
            yield host
    finally:
        service.terminate()
        try:
            service.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        socket.unlink(missing_ok=True)
        if short_dir is not None:
            shutil.rmtree(short_dir, ignore_errors=True)


def _wait_until_answering(host: str, service: subprocess.Popen[bytes], log_path: Path) -> None:
    import docker

    deadline = time.monotonic() + _ENGINE_START_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise PipelineError(
                f"`podman system service` exited with status {service.returncode} before answering on "
                f"{host}; see {log_path}:\n{_tail(log_path)}"
            )
        try:
            client = docker.DockerClient(base_url=host, timeout=5)
            try:
                client.ping()
                return
            finally:
                client.close()
        except Exception as exc:  # not listening yet: the socket appears a moment after the start
            last_error = exc
        time.sleep(0.2)
    raise PipelineError(
        f"`podman system service` did not answer on {host} within {_ENGINE_START_TIMEOUT_S:.0f} s "
        f"({last_error}); see {log_path}"
    )


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def _environment_variable(name: str, value: str) -> Iterator[None]:
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def require_images(images: Iterable[str]) -> None:
    """Check that the engine at ``DOCKER_HOST`` holds every image, without pulling any.

    Raises:
        PipelineError: The engine does not answer, or an image is missing (the message names it).
    """
    import docker

    try:
        client = docker.from_env()
    except docker.errors.DockerException as exc:
        raise PipelineError(f"cannot reach the container engine at DOCKER_HOST: {exc}") from None
    try:
        missing = []
        for image in sorted(set(images)):
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                missing.append(image)
    finally:
        client.close()
    if missing:
        raise PipelineError(
            f"image {', '.join(missing)} is not in the container engine at {os.environ.get('DOCKER_HOST')}:"
            " build it with `make image`, or name another with --image (fully qualified, localhost/NAME:TAG)"
        )


# ------------------------------------------------------------------------------------------ mounts


@dataclass(frozen=True, order=True)
class BindMount:
    """A host path mounted at the same path inside a step's container."""

    path: str
    read_only: bool

    def to_docker(self) -> Any:
        """The docker SDK's form (``docker.types.Mount``)."""
        from docker.types import Mount

        return Mount(target=self.path, source=self.path, type="bind", read_only=self.read_only)


def _local_path(value: str | None) -> Path | None:
    """The filesystem path of an absolute path or ``file://`` URI; None for other URIs."""
    if not value:
        return None
    if value.startswith("file://"):
        value = value.removeprefix("file://")
    elif "://" in value:
        return None
    return Path(value) if value.startswith("/") else None


def _sqlite_file(url: str | None) -> Path | None:
    """The database file of an absolute ``sqlite:////abs/path`` URL (four slashes), else None."""
    if url and url.startswith("sqlite:////"):
        return Path(url.removeprefix("sqlite:///"))
    return None


def bind_mounts(cfg: RunConfig) -> list[BindMount]:
    """The host paths a resolved embedded configuration names, as the pipeline's steps use them; none
    for a cluster configuration (its steps reach only network services).

    Which paths, and how, follows each location's kind in :data:`refinery.config.LOCATIONS`.
    Read-only (when they exist): the data files themselves (not their folder, which may be /tmp or hold
    other things), the base model, the service folder and the GitOps seed folder. Writable: the state
    folder, the folders of sqlite databases (the registry's, the logs'), the registry's artifact
    location, the Bento store and a local GitOps repository. Scratch folders are not mounted: a step's
    disk is its own. A writable location that does not exist yet is created here, as an empty folder,
    so that it can be mounted: otherwise the step would create it inside the container and what it
    wrote would be lost with the container. The GitOps repository is the exception: the step builds it
    beside its path and renames it into place, which a mount point cannot be, so the folder it goes
    into is created and mounted instead. ``file://`` locations are mounted only when they exist (git
    does not create them). A path inside another mount of the same mode is left to that mount.

    Raises:
        PipelineError: A location is ``/`` or ``/tmp``, which cannot be mounted over the image's own.
    """
    if not cfg.embedded:
        return []
    wanted = _Wanted()
    state = cfg.state
    state.mkdir(parents=True, exist_ok=True)
    wanted.add(state, False, "state_dir")
    tree = cfg.to_dict()
    for location in LOCATIONS:
        wanted.location(location, location.get(tree))
    return _without_covered([BindMount(path, ro) for path, ro in wanted.paths.items()])


class _Wanted:
    """The paths to mount, each read-only unless some location wants it writable."""

    def __init__(self) -> None:
        self.paths: dict[str, bool] = {}  # path -> read_only

    def location(self, location: Location, value: str | None) -> None:
        """Add what ``location`` (set to ``value``) needs mounted, by its kind."""
        if location.kind in ("data", "image"):
            path = _local_path(value)
            if path is not None and path.exists():
                self.add(path, True, location.key)
        elif location.kind == "database":
            db = _sqlite_file(value)
            self.writable(str(db.parent) if db else value, location.key)
        elif location.kind in ("store", "git"):
            self.writable(value, location.key, renamed_into_place=location.kind == "git")

    def add(self, path: Path, read_only: bool, field: str) -> None:
        # One leading slash: POSIX keeps "//x" distinct from "/x", and so would the engine's mount table.
        path = Path("/" + os.path.normpath(path).lstrip("/"))
        if str(path) in _UNMOUNTABLE:
            raise PipelineError(
                f"{field} is {path}, which cannot be mounted into the step containers: use a folder below it"
            )
        self.paths[str(path)] = self.paths.get(str(path), True) and read_only

    def writable(self, value: str | None, field: str, *, renamed_into_place: bool = False) -> None:
        path = _local_path(value)
        if path is None or (not path.exists() and (value or "").startswith("file://")):
            return
        if not path.exists():
            folder = path.parent if renamed_into_place else path
            folder.mkdir(parents=True, exist_ok=True)
            path = folder
        self.add(path, False, field)


def _without_covered(mounts: Sequence[BindMount]) -> list[BindMount]:
    """Drop mounts inside an outer mount of the same mode; a nested mount of the other mode stays."""
    kept: list[BindMount] = []
    for mount in sorted(mounts, key=lambda m: (len(Path(m.path).parts), m.path)):
        enclosing = [k for k in kept if Path(mount.path).is_relative_to(k.path)]
        innermost = max(enclosing, key=lambda k: len(Path(k.path).parts), default=None)
        if innermost is None or innermost.read_only != mount.read_only:
            kept.append(mount)
    return sorted(kept)


# ------------------------------------------------------------------------------------------ runner


def docker_runner(mounts: Sequence[BindMount], env: Mapping[str, str]) -> Any:
    """kfp.local's DockerRunner set up for refinery's steps, on the engine ``DOCKER_HOST`` names.

    Each container runs as the invoking user (see :func:`_identity`), with ``HOME`` (and ``USER``,
    which libraries read when the user has no passwd entry in the image) set, the host network (a step
    reaches what the host reaches, e.g. an MLflow server on localhost, as under the subprocess runner),
    ``env`` plus the offline switches in :data:`PASSED_ENV`, ``mounts``, and the label
    :data:`STEP_LABEL`.

    Use it inside :func:`reporting_exit_codes`, or a failed step may be reported as a success.
    """
    import docker
    from kfp import local

    environment = {
        **{k: os.environ[k] for k in PASSED_ENV if k in os.environ},
        **env,
        "HOME": CONTAINER_HOME,
        "USER": _user_name(),
    }
    client = docker.from_env()
    try:
        identity = _identity(client)
    finally:
        client.close()
    return local.DockerRunner(
        **identity,
        environment=environment,
        mounts=[m.to_docker() for m in mounts],
        network_mode="host",
        labels={STEP_LABEL: "kfp.local"},
    )


def _identity(client: Any) -> dict[str, str]:
    """Run arguments that make what a step writes into a bind mount belong to the invoking user.

    A rootful engine maps ids one to one: run as ``uid:gid``. Rootless, container ids are shifted into
    the user's subordinate range, except under podman's ``keep-id`` (the user keeps their id) and, for
    rootless Docker, container root (which is the invoking user on the host).
    """
    uid_gid = f"{os.getuid()}:{os.getgid()}"
    if "name=rootless" not in client.info().get("SecurityOptions", []):
        return {"user": uid_gid}
    components = client.version().get("Components", [])
    if any(c.get("Name") == "Podman Engine" for c in components):
        return {"user": uid_gid, "userns_mode": "keep-id"}
    return {"user": "0:0"}


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "refinery"


def run_container(
    client: Any, image: str, command: list[str], volumes: dict[str, Any], **container_run_args: Any
) -> int:
    """Run one step's container to the end and return its real exit code.

    The replacement for ``kfp.local.docker_task_handler.run_docker_container`` (same signature): the
    container is kept until its exit code has been read, its output is printed line by line (kfp.local
    indents each printed line under the task, as it does for the subprocess runner), and it is removed
    afterwards, whatever happened. As on Kubernetes, the step's command replaces the image's entrypoint
    (the project image's is ``refinery``; the docker API would otherwise append the command to it).
    Nothing is pulled: :func:`require_images` checks the images first.

    Raises:
        PipelineError: The engine does not have the image, or refuses to start the container.
    """
    import docker

    for forced in ("auto_remove", "remove", "detach", "stdout", "stderr", "entrypoint"):
        container_run_args.pop(forced, None)
    try:
        container = client.containers.create(
            image=image, entrypoint=command[:1], command=command[1:], volumes=volumes, **container_run_args
        )
    except docker.errors.ImageNotFound:
        raise PipelineError(
            f"image {image} is not in the container engine; build it with `make image`"
        ) from None
    except docker.errors.APIError as exc:
        raise PipelineError(f"the container engine cannot create a container from {image}: {exc}") from None
    try:
        try:
            container.start()
        except docker.errors.APIError as exc:
            raise PipelineError(
                f"the container engine cannot start a container from {image}: {exc}"
            ) from None
        _print_lines(container.logs(stream=True, follow=True))
        return int(container.wait()["StatusCode"])
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)


def _print_lines(chunks: Iterable[bytes]) -> None:
    """Print a byte stream as whole lines (a chunk may hold several lines, or end inside one)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        *lines, pending = pending.split("\n")
        for line in lines:
            print(line)
    pending += decoder.decode(b"", final=True)
    if pending:
        print(pending)


_KFP_SIGNATURE = ["client", "image", "command", "volumes", "container_run_args"]


@contextlib.contextmanager
def reporting_exit_codes() -> Iterator[None]:
    """Within the block, kfp.local's DockerRunner runs containers with :func:`run_container`.

    Raises:
        PipelineError: The installed kfp no longer has the function this replaces, with its signature.
    """
    from kfp.local import docker_task_handler

    original = getattr(docker_task_handler, "run_docker_container", None)
    if original is None or list(inspect.signature(original).parameters) != _KFP_SIGNATURE:
        raise PipelineError(
            "kfp.local.docker_task_handler.run_docker_container is missing or has changed: the exit-code "
            "fix in refinery.orchestration.containers must be updated for this kfp release"
        )
    docker_task_handler.run_docker_container = run_container
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original
