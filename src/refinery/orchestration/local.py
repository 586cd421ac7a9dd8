"""Running the training pipeline on one machine through kfp.local, with a readable console.

Steps run either as subprocesses in this environment (``runner="subprocess"``) or each in the project
image through kfp.local's DockerRunner (``runner="docker"``, see :mod:`refinery.orchestration.containers`).
A cluster configuration (no ``state_dir``) runs with its environment's retry policies, as on the
cluster; an embedded one without (a local failure is no outage).
kfp.local prints every step's executor input and output in full; ``refinery run`` keeps that in
``run.log`` under the run's folder and shows a line per step status instead, plus whatever the step
itself reports (validation findings, training progress). At the end the results the steps wrote as
JSON are collected into a :class:`RunSummary`.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import re
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from refinery.config import RunConfig, resolve
from refinery.credentials import ENV_NAMES
from refinery.errors import PipelineError
from refinery.orchestration.steps import ERROR_FILE
from refinery.results import Record, read_json
from refinery.version import Images

# Child processes inherit these: no telemetry, no hub downloads behind the user's back.
QUIET_ENV = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXECUTING = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")

RUNNERS = ("subprocess", "docker")
# Where a cluster configuration's local runs go (an embedded one keeps them under its state_dir).
LOCAL_RUNS = Path(".refinery") / "runs"


class _ConsoleFilter(io.TextIOBase):
    """Tees kfp.local's output to a log file and shows a condensed view on the console."""

    def __init__(self, console: TextIO, log: TextIO, verbose: bool) -> None:
        self._console, self._log, self._verbose = console, log, verbose
        self._buffer = ""
        self._in_json = False
        self._in_outputs = False
        self._started: dict[str, float] = {}

    def write(self, text: str) -> int:
        self._log.write(text)
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._show(line)
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        self._console.flush()

    def _show(self, raw: str) -> None:
        if self._verbose:
            self._console.write(raw + "\n")
            return
        line = _ANSI.sub("", raw)
        if self._in_outputs and line.startswith(" "):
            return  # kfp.local's listing of a finished task's outputs; the summary reports them
        self._in_outputs = line.endswith("outputs:")
        if m := _EXECUTING.search(line):
            self._started[m.group(1)] = time.monotonic()
            self._console.write(f"▶ {m.group(1)}\n")
        elif m := _FINISHED.search(line):
            took = time.monotonic() - self._started.get(m.group(1), time.monotonic())
            mark = "✓" if m.group(2) == "SUCCESS" else "✗"
            self._console.write(f"{mark} {m.group(1)} {m.group(2).lower()} in {took:.1f} s\n")
        elif line.startswith("    "):  # a step's own output, indented by kfp.local
            text = line[4:]
            if self._in_json:
                self._in_json = text != "}"
            elif text.endswith("Got executor_input:"):
                self._in_json = True
            elif text.startswith("[KFP Executor") or not text.strip():
                pass
            else:
                self._console.write(f"  {text}\n")
        self._console.flush()


@dataclass
class RunSummary(Record):
    """What one training run did, collected from the results its steps wrote."""

    run_name: str
    run_dir: str
    succeeded: bool
    seconds: float
    failed_step: str | None = None
    error: str | None = None
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return "promote" in self.steps

    @property
    def decision(self) -> dict[str, Any] | None:
        return self.steps.get("gate")

    def to_text(self) -> str:
        """The end-of-run summary shown by ``refinery run``."""
        from refinery.evaluation.gate import GateDecision

        lines = [
            f"run {self.run_name}: {'succeeded' if self.succeeded else 'FAILED'} in {self.seconds:.0f} s"
        ]
        if self.failed_step:
            lines.append(f"  failed step: {self.failed_step}")
        if self.error:
            lines.append(f"  error: {self.error}")
        lines += _search_lines(self.steps.get("search"))
        lines += _evaluation_lines(self.steps.get("evaluate"))
        decision = GateDecision.from_dict(self.decision) if self.decision else None
        if decision is not None:
            lines += [f"  {line}" for line in decision.to_lines()]
        lines += self._release_lines()
        lines += self._champion_lines(no_change=decision is not None and decision.no_change)
        return "\n".join(lines)

    def _release_lines(self) -> list[str]:
        """What the run registered and packaged, and how the serving check went."""
        lines = []
        if reg := self.steps.get("register"):
            lines.append(f"  registered: {reg['name']} version {reg['version']}")
        if pkg := self.steps.get("package"):
            lines.append(f"  bento: {pkg['bento_tag']}")
        check = self.steps.get("check-serving")
        if check and not check.get("skipped"):
            from refinery.packaging.check import ServingCheckResult

            lines += [f"  {line}" for line in ServingCheckResult.from_dict(check).to_lines()]
        return lines

    def _champion_lines(self, *, no_change: bool) -> list[str]:
        """Where the promotion went and which model is the champion after the run."""
        check = self.steps.get("check-serving")
        promo = self.steps.get("promote")
        if promo and promo.get("pending_branch"):
            # A protected environment: the change waits for review, the champion has not moved.
            return [
                f"  review branch: {promo['pending_branch']} ({promo['environment']}, commit"
                f" {promo['commit'][:12]}): {promo.get('compare_url') or promo.get('merge_hint')}",
                f"  champion: unchanged until the branch is merged and `refinery models sync` runs"
                f" ({promo['name']} version {promo['version']} waits for review)",
            ]
        if promo:
            return [
                f"  gitops commit: {promo['commit'][:12]} ({promo['environment']})",
                f"  champion: {promo['name']} version {promo['version']}",
            ]
        if not self.succeeded:
            return []
        if check and not check.get("passed", True):
            return [
                "  champion: unchanged; the packaged Bento failed the serving check, so it was not promoted"
            ]
        if no_change:
            return [
                "  champion: unchanged; the challenger is no change, so nothing was registered,"
                " packaged or promoted"
            ]
        return ["  champion: unchanged"]


def _search_lines(search: dict[str, Any] | None) -> list[str]:
    """The hyperparameter search's trials and its best one, when the run searched."""
    if not search:
        return []
    best = next(t for t in search["trials"] if t["number"] == search["best_trial"])
    return [
        f"  search: {len(search['trials'])} trials, best trial {best['number']} {best['params']}"
        f" with {search['metric']} {best['value']:.4f}"
    ]


def _evaluation_lines(evaluation: dict[str, Any] | None) -> list[str]:
    """The challenger's (and the champion's) test scores, when the run evaluated."""
    if not evaluation:
        return []
    ch = evaluation["challenger"]
    lines = [f"  challenger: test macro-F1 {ch['macro_f1']:.4f}, accuracy {ch['accuracy']:.4f}"]
    if evaluation.get("champion"):
        cp = evaluation["champion"]
        lines.append(
            f"  champion v{evaluation.get('champion_version')}: test macro-F1 {cp['macro_f1']:.4f},"
            f" accuracy {cp['accuracy']:.4f}"
        )
    return lines + _domain_lines(evaluation)


def _domain_lines(evaluation: dict[str, Any]) -> list[str]:
    """Accuracy of both models on the established and the new test rows, when the run added new ones."""
    from refinery.data.sources import DOMAIN_SLICE

    ours = evaluation["challenger"].get("slices", {}).get(DOMAIN_SLICE, {})
    theirs = (evaluation.get("champion") or {}).get("slices", {}).get(DOMAIN_SLICE, {})
    lines = []
    for domain in ("established", "new"):
        if domain in ours:
            champion = f", champion {theirs[domain]['accuracy']:.4f}" if domain in theirs else ""
            lines.append(
                f"  {domain} test rows ({ours[domain]['n']}): accuracy challenger"
                f" {ours[domain]['accuracy']:.4f}{champion}"
            )
    return lines


# Where each step leaves its JSON result inside its task folder.
_RESULT_FILES = {
    "resolve-config": "resolved/resolved.json",
    "validate-data": "validation/validation.json",
    "prepare-data": "dataset/prepared.json",
    "finetune": "model/training.json",
    "evaluate": "evaluation/evaluation.json",
    "gate": "decision/decision.json",
    "register": "registration/registration.json",
    "package": "bento/package.json",
    "check-serving": "check/serving_check.json",
    "promote": "promotion/promotion.json",
}


def collect_summary(run_dir: Path, seconds: float, failed_step: str | None = None) -> RunSummary:
    """Read the results the steps of one run wrote under ``run_dir``."""
    steps = {}
    for task, rel in _RESULT_FILES.items():
        path = run_dir / task / rel
        if path.is_file():
            steps[task] = read_json(path)
    # A search's rounds each write the history so far: the longest one is the whole search.
    searches = [read_json(p) for p in run_dir.glob("merge-round*/best/search.json")]
    if searches:
        steps["search"] = max(searches, key=lambda s: len(s["trials"]))
    error = None
    for err in sorted(run_dir.glob(f"*/{ERROR_FILE}")):
        failed_step = failed_step or err.parent.name
        error = err.read_text(encoding="utf-8").strip()
    return RunSummary(
        run_name=run_dir.name,
        run_dir=str(run_dir),
        succeeded=failed_step is None,
        seconds=seconds,
        failed_step=failed_step,
        error=error,
        steps=steps,
    )


@contextlib.contextmanager
def _keeping_arguments() -> Iterator[None]:
    """Within the block, kfp.local's subprocess runner leaves the executor input alone.

    kfp 2.17's SubprocessRunner replaces every "python3" in a step's command line with its interpreter's
    path, values included: a configuration holding a path such as .venv/lib/python3.11/... reached the
    step corrupted. The replacement below does what kfp's does everywhere but in the argument after
    ``--executor_input`` (the JSON carrying the step's inputs). kfp calls the function by its
    module-global name; its signature is checked before it is replaced, so a kfp release that changes
    it fails loudly.

    Raises:
        PipelineError: The installed kfp no longer has the function, with its signature.
    """
    from kfp.local import subprocess_task_handler

    original = getattr(subprocess_task_handler, "replace_python_executable", None)
    if original is None or list(inspect.signature(original).parameters) != ["full_command", "new_executable"]:
        raise PipelineError(
            "kfp.local.subprocess_task_handler.replace_python_executable is missing or has changed: the"
            " argument fix in refinery.orchestration.local must be updated for this kfp release"
        )

    def replace(full_command: list[str], new_executable: str) -> list[str]:
        replaced = original(full_command, new_executable)
        return [
            given if i and full_command[i - 1] == "--executor_input" else new
            for i, (given, new) in enumerate(zip(full_command, replaced, strict=True))
        ]

    subprocess_task_handler.replace_python_executable = replace
    try:
        yield
    finally:
        subprocess_task_handler.replace_python_executable = original


@contextlib.contextmanager
def _loop_inputs_kept() -> Iterator[None]:
    """Within the block, kfp.local hands a ParallelFor's body the outputs of earlier tasks unchanged.

    kfp 2.17 builds each iteration of a loop with ``create_parameter_loop_iteration_task_spec``, which
    replaces every input the loop takes from another task's output parameter with the loop item, not
    only the item itself: a search trial received its trial's ``{"number", "params"}`` as its data,
    model and training configuration. The replacement below lets kfp build the iteration, then puts
    back each such input but the loop item. kfp calls the function by its module-global name; its
    signature is checked before it is replaced, so a kfp release that changes it fails loudly.

    Raises:
        PipelineError: The installed kfp no longer has the function, with its signature.
    """
    from kfp.local.orchestrator import task_spec_utils

    name = "create_parameter_loop_iteration_task_spec"
    original = getattr(task_spec_utils, name, None)
    expected = ["original_task_spec", "loop_item", "loop_task_name"]
    if original is None or list(inspect.signature(original).parameters) != expected:
        raise PipelineError(
            f"kfp.local.orchestrator.task_spec_utils.{name} is missing or has changed: the loop fix in"
            " refinery.orchestration.local must be updated for this kfp release"
        )

    def iteration(original_task_spec: Any, loop_item: Any, loop_task_name: str) -> Any:
        spec = original(original_task_spec, loop_item, loop_task_name)
        item = original_task_spec.parameter_iterator.item_input
        for key, given in original_task_spec.inputs.parameters.items():
            if key != item and given.HasField("task_output_parameter"):
                spec.inputs.parameters[key].CopyFrom(given)
        return spec

    setattr(task_spec_utils, name, iteration)
    try:
        yield
    finally:
        setattr(task_spec_utils, name, original)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_training(
    cfg: RunConfig,
    *,
    runner: str = "subprocess",
    images: Images | None = None,
    verbose: bool = False,
    console: TextIO | None = None,
) -> RunSummary:
    """Run the training pipeline locally through kfp.local.

    Args:
        cfg: An embedded configuration (resolved here, if it is not yet), or a cluster configuration as
            written (checked here and resolved by the run's first step, where the steps run: a path such
            as ``packaging.service_dir`` names a folder of the step's image, not of this machine).
        runner: ``"subprocess"`` runs the steps in this Python environment; ``"docker"`` runs each step
            in its image on the engine ``DOCKER_HOST`` names (or a podman service started for the run).
            An embedded configuration's local folders are mounted into the containers; a cluster
            configuration's steps get nothing but kfp.local's artifact root and the network, plus the
            credential variables of this environment (standing in for the cluster's Secrets).
        images: The images the steps name. Default: this version's images in ``images.registry``;
            with the docker runner, the project image for every step, fine-tuning included (the
            containers get no GPU here).
        verbose: Show kfp.local's full output instead of the condensed view.
        console: Where the progress goes (default: standard output).

    Returns:
        The run's summary; ``succeeded`` is False when a step failed (the summary names it).

    Raises:
        PipelineError: The runner is unknown, or (docker) no engine answers or an image is missing.
        ConfigError: A cluster configuration has no resources for its environment, or an inconsistent one.
    """
    from kfp import local
    from pipelines.resources import environment_resources
    from pipelines.training import build_training_pipeline

    if runner not in RUNNERS:
        raise PipelineError(f"unknown runner {runner!r}: expected one of {', '.join(RUNNERS)}")
    resolved = resolve(cfg)
    if cfg.embedded:
        cfg = resolved
    console = console or sys.stdout
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    runs = cfg.state / "runs" if cfg.embedded else Path.cwd() / LOCAL_RUNS
    root = runs / f"{stamp}-{uuid.uuid4().hex[:6]}"
    # A cluster configuration runs with its environment's retries; its Kubernetes settings have no
    # effect here.
    resources = None if cfg.embedded else environment_resources(cfg)[1]
    failed_step = None
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_loop_inputs_kept())
        if runner == "docker":
            from refinery.orchestration import containers

            if images is None:
                project = Images.default(registry=cfg.images.registry).project
                images = Images(project=project, gpu=project)
            engine = stack.enter_context(containers.container_engine(runs))
            containers.require_images({images.project, images.gpu})
            stack.enter_context(containers.reporting_exit_codes())
            secrets = {name: os.environ[name] for name in ENV_NAMES if name in os.environ}
            kfp_runner = containers.docker_runner(containers.bind_mounts(cfg), {**QUIET_ENV, **secrets})
            console.write(f"steps run in {images.project} on {engine}\n")
        else:
            kfp_runner = local.SubprocessRunner(use_venv=False)
            stack.enter_context(_environment(QUIET_ENV))
            stack.enter_context(_keeping_arguments())
        root.mkdir(parents=True, exist_ok=True)
        local.init(runner=kfp_runner, pipeline_root=str(root), raise_on_error=True)
        log = stack.enter_context(open(root / "run.log", "w", encoding="utf-8"))
        tee = _ConsoleFilter(console, log, verbose)
        pipeline = build_training_pipeline(cfg, images, resources)
        try:
            with contextlib.redirect_stdout(tee), warnings.catch_warnings():  # type: ignore[type-var]
                # Under the subprocess runner the steps run in this environment, not in the images they
                # name; that is the point of it.
                warnings.filterwarnings("ignore", message=".*base image.*", category=RuntimeWarning)
                warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
                pipeline()
        except RuntimeError as exc:
            m = re.search(r"Inner task failed: '([^']+)'", _ANSI.sub("", str(exc)))
            failed_step = m.group(1) if m else "pipeline"
        tee.flush()
    run_dirs = [p for p in root.iterdir() if p.is_dir()]
    if not run_dirs:
        raise PipelineError(f"kfp.local produced no run folder under {root}; see {root / 'run.log'}")
    summary = collect_summary(run_dirs[0], time.monotonic() - started, failed_step)
    summary.write_json(root / "summary.json")
    return summary
