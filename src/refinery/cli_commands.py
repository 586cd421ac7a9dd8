"""The handlers of ``refinery``'s commands, except ``models`` (in :mod:`refinery.cli`, beside the parser).

Each handler takes the parsed arguments and returns an exit status (:mod:`refinery.errors` defines them:
0 success, 1 the work ran and said no, 2 usage or configuration, 3 a service unreachable); an error it
raises is turned into its status by :func:`refinery.cli.main`. Heavy libraries are imported inside the
handlers, so ``refinery --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from refinery.config import RunConfig, load_config, read_config
from refinery.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, DataError, RefineryError

if TYPE_CHECKING:
    from refinery.orchestration.local import RunSummary


def _config(args: argparse.Namespace) -> RunConfig:
    import os

    cfg = load_config(args.config, args.overrides)
    # The object store's endpoint and region, for what this command reads there (the environment wins).
    for name, value in cfg.storage.env().items():
        os.environ.setdefault(name, value)
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from refinery.orchestration.local import run_training
    from refinery.version import Images

    if args.image and args.runner != "docker":
        print(
            "error: --image applies to --runner docker (the subprocess runner uses no image)", file=sys.stderr
        )
        return EXIT_USAGE
    # Checked and resolved here, so that a mistake stops the run before it starts.
    _reach_registry(_config(args))
    # A cluster configuration goes to the pipeline as written: its paths resolve where the steps run.
    cfg = read_config(args.config, args.overrides)
    images = Images(project=args.image, gpu=args.image) if args.image else None
    where = f"state in {cfg.state_dir}" if cfg.embedded else "a cluster configuration: network services only"
    print(f"refinery run: {args.config} -> {where}", flush=True)
    summary = run_training(cfg, runner=args.runner, images=images, verbose=args.verbose)
    print("\n" + summary.to_text())
    refused = _not_promoted(summary)
    if refused:
        print(f"refinery run: exit {EXIT_FAILED}: {refused}", flush=True)
    return EXIT_OK if summary.succeeded and not refused else EXIT_FAILED


def _reach_registry(cfg: RunConfig) -> None:
    """Reach a registry server before the run starts, as `refinery ui` does: an outage fails here in
    seconds, naming it (exit 3), instead of failing a step. A sqlite registry is a file: nothing to
    reach."""
    uri = cfg.registry.tracking_uri or ""
    if uri.partition("://")[0].split("+")[0].lower() in {"", "sqlite", "file"}:
        return
    from refinery.registry.mlflow_registry import Registry

    Registry(cfg.registry).versions()


def _not_promoted(summary: RunSummary) -> str | None:
    """Why a run that finished promoted nothing (the gate rejected the challenger, it is no change, or
    its Bento failed the serving check); None when it promoted, or failed before judging."""
    decision = summary.decision
    if not summary.succeeded or decision is None or summary.promoted:
        return None
    from refinery.evaluation.gate import GateDecision

    verdict = GateDecision.from_dict(decision)
    if verdict.no_change:
        return "the challenger is no change from the champion; nothing was promoted"
    if not verdict.passed:
        return "the gate rejected the challenger; the champion is unchanged"
    return "the packaged Bento failed the serving check; the champion is unchanged"


def cmd_compile(args: argparse.Namespace) -> int:
    from refinery.orchestration.compiling import compile_pipeline

    overrides = list(args.overrides)
    if args.environment:
        overrides.append(f"gitops.environment={args.environment}")
    if args.registry:
        overrides.append(f"images.registry={args.registry}")
    # The pipeline carries the configuration as written: its paths resolve where the steps run, and no
    # path of this machine reaches the cluster.
    compiled = compile_pipeline(
        read_config(args.config, overrides),
        args.pipeline,
        environment=args.environment,
        image=args.image,
        gpu_image=args.gpu_image,
        source=args.config,
    )
    out = Path(args.output or f"build/{args.pipeline}-pipeline.yaml")
    compiled.write(out)
    resources, images = compiled.resources, compiled.images
    where = "no resource profiles"
    if compiled.profiles:
        where = f"resource profiles of environment {compiled.environment}"
    if args.pipeline == "training":
        print(
            f"wrote {out} (steps on {images.project}, finetune on {images.gpu}; {where};"
            f" finetune retries {resources.finetune_retries}, network retries {resources.network_retries.count})"
        )
    else:
        print(
            f"wrote {out} (on {images.project}; {where}; network retries {resources.network_retries.count})"
        )
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    from refinery.errors import PipelineError
    from refinery.orchestration.compiling import require_cluster
    from refinery.orchestration.kfp_api import connect, endpoint, submit_pipeline, wait_for_run

    cfg = read_config(args.config, args.overrides)
    # What the cluster cannot run, and where it would go, before the few seconds of compiling.
    require_cluster(cfg, args.config)
    ep = endpoint(cfg)
    client = connect(ep)
    print(f"submitting the {args.pipeline} pipeline of {args.config} to {ep.host}", flush=True)
    run = submit_pipeline(
        cfg,
        args.pipeline,
        experiment=args.experiment,
        run_name=args.run_name,
        client=client,
        source=args.config,
    )
    how = "uploaded" if run.version_uploaded else "already uploaded"
    print(f"pipeline {run.pipeline_name} version {run.version_name} ({how})")
    print(f"run {run.run_name} ({run.run_id}) in experiment {run.experiment}:\n{run.url}", flush=True)
    if not args.wait:
        return EXIT_OK
    try:
        outcome = wait_for_run(
            client, run.run_id, args.timeout, on_change=lambda line: print(line, flush=True)
        )
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"run {run.run_id} {outcome.state} after {outcome.seconds:.0f} s")
    return EXIT_OK


def cmd_schedules_apply(args: argparse.Namespace) -> int:
    from refinery.orchestration.kfp_api import connect
    from refinery.orchestration.schedules import apply, declared

    declaration = declared(args.file)
    client = connect(declaration.endpoint)
    print(f"applying {args.file} to {declaration.endpoint.host}", flush=True)
    applied = apply(declaration, client, show=lambda line: print(line, flush=True))
    if not applied.done:
        print("no changes")
    if applied.plan.unmanaged:
        print(f"not created by refinery, left alone: {', '.join(applied.plan.unmanaged)}")
    return EXIT_OK


def cmd_schedules_diff(args: argparse.Namespace) -> int:
    from refinery.orchestration.kfp_api import connect
    from refinery.orchestration.schedules import declared, plan

    declaration = declared(args.file)
    print(plan(declaration, connect(declaration.endpoint)).to_text())
    return EXIT_OK


def cmd_schedules_list(args: argparse.Namespace) -> int:
    from refinery.orchestration.kfp_api import connect
    from refinery.orchestration.schedules import format_rows, list_endpoint, list_schedules

    if args.file and args.config:
        print("error: give -f (a schedules file) or -c (a configuration), not both", file=sys.stderr)
        return EXIT_USAGE
    cfg = read_config(args.config, args.overrides) if args.config else None
    ep, file = list_endpoint(args.file, cfg)
    print(format_rows(list_schedules(connect(ep), ep, file)))
    return EXIT_OK


def cmd_images(args: argparse.Namespace) -> int:
    from refinery.version import Images, image_tag

    images = Images.default(registry=args.registry)
    print(f"tag={image_tag()}\nproject={images.project}\ngpu={images.gpu}")
    return EXIT_OK


def cmd_config_schema(args: argparse.Namespace) -> int:
    from refinery.config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    import yaml

    from refinery.config import config_text, run_parameters

    if args.parameters:
        # What a pipeline run takes: the run form's fields, as compiled from this configuration.
        cfg = read_config(args.config, args.overrides)
        print(json.dumps({**run_parameters(cfg), "config": config_text(cfg)}, indent=2))
        return EXIT_OK
    print(yaml.safe_dump(_config(args).to_dict(), sort_keys=False), end="")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from refinery.data.validate import validate_data

    overrides = list(args.overrides) + ([f"data.uri={args.data}"] if args.data else [])
    cfg = load_config(args.config, overrides)
    out = Path(args.output) if args.output else (cfg.state if cfg.embedded else Path.cwd()) / "validation"
    try:
        report = validate_data(cfg, out)
    except DataError as exc:
        print(f"error: unusable input: {exc}", file=sys.stderr)
        return EXIT_USAGE
    verdict = "PASSED" if report.success else "FAILED"
    print(
        f"{verdict}: {report.row_count} rows, {len(report.failures)} error(s), {len(report.warnings)} warning(s)"
    )
    qualified = len(report.files) > 1
    for failure in report.failures + report.warnings:
        print(f"  {failure.severity:<7} {failure.check}: {failure.message}")
        for row in failure.rows[:3]:
            print(f"          {row.where(qualified)}: {row.text[:70]}")
    print(f"report: {report.paths['html']} (also report.md, validation.json, data_docs/ in {out})")
    return EXIT_OK if report.success else EXIT_FAILED


def cmd_demo_data(args: argparse.Namespace) -> int:
    from refinery.data.demo import write_demo_data

    demo = write_demo_data(Path(args.output), n=args.rows, seed=args.seed)
    print(json.dumps(demo.to_dict() if hasattr(demo, "to_dict") else str(demo), indent=2, default=str))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from refinery.packaging.bento import PackageResult, fetch
    from refinery.serving import bentoml_serve_argv, release_from_env, serve_command

    if args.config:
        from refinery.registry.mlflow_registry import Registry

        cfg = _config(args)
        champion = Registry(cfg.registry).champion(cfg.gitops.environment, legacy=True)
        bento = PackageResult.from_tags(champion.tags) if champion else None
        if champion is None or bento is None:
            raise RefineryError(
                f"no packaged champion of {cfg.gitops.environment} for {cfg.registry.model_name} in"
                f" {cfg.registry.tracking_uri}: run `refinery run` first"
            )
        home = Path(cfg.packaging.bentoml_home or "")
        what = f"{cfg.registry.model_name} v{champion.version}"
        argv, env = serve_command(cfg, fetch(bento, home))
        where = f"http://{cfg.serving.host}:{cfg.serving.port}"
    else:
        # In a serving container: the release its overlay names; the service reads its settings from the
        # environment the Deployment gives it.
        if not os.environ.get("BENTOML_HOME"):
            raise RefineryError("BENTOML_HOME is not set: without -c, refinery serve fetches the Bento there")
        tag, uri, sha256 = release_from_env(os.environ)
        bento = PackageResult(tag, "", uri, sha256)
        what = f"the release at {uri}"
        argv, env = (
            bentoml_serve_argv(fetch(bento, Path(os.environ["BENTOML_HOME"])), args.host, args.port),
            {},
        )
        where = f"http://{args.host}:{args.port}"
    print(f"serving {what} ({bento.bento_tag}) on {where}", flush=True)
    # Become the server, so that signals (Ctrl-C, SIGTERM from a supervisor) reach BentoML directly.
    os.execve(argv[0], argv, {**os.environ, **env})


def cmd_ui(args: argparse.Namespace) -> int:
    import os

    from refinery.registry.mlflow_registry import Registry

    cfg = _config(args)
    registry = Registry(cfg.registry)  # refuses an unresolved (empty) tracking_uri
    uri = cfg.registry.tracking_uri or ""
    if uri.partition("://")[0].lower() in {"http", "https"}:
        print(f"the registry is an MLflow server; its UI is at {registry.uri}")
        return EXIT_OK
    # Reach the store first: an unreachable database fails here in seconds, naming it, instead of
    # MLflow's engine creation retrying for minutes.
    champion = registry.champion(cfg.gitops.environment, legacy=True)
    # The store URI goes in the environment, not argv, so a password in it does not show in `ps`.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_BACKEND_STORE_URI": uri}
    argv = [sys.executable, "-m", "mlflow", "server", "--host", args.host, "--port", str(args.port)]
    argv += ["--workers", "1"]
    if cfg.registry.artifact_location:
        # Runs keep their own artifact location; the server reads them there rather than proxying.
        argv += ["--default-artifact-root", cfg.registry.artifact_location, "--no-serve-artifacts"]
    alias = f"champion-{cfg.gitops.environment}"
    state = f"{alias} version {champion.version}" if champion else f"no {alias} yet"
    print(
        f"MLflow UI for {registry.uri} ({cfg.registry.model_name}: {state}) on http://{args.host}:{args.port}",
        flush=True,
    )
    # Become the server (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: no GenAI job runner beside it).
    os.execve(sys.executable, argv, env)


def cmd_status(args: argparse.Namespace) -> int:
    from refinery.release.status import environment_status

    if args.context and not args.kubeconfig:
        raise ConfigError("--context names a context of --kubeconfig; give the kubeconfig too")
    from refinery.db import mask_url

    cfg = _config(args)
    statuses = environment_status(cfg, kubeconfig=args.kubeconfig, context=args.context)
    where = f"registry {mask_url(cfg.registry.tracking_uri or '')}, GitOps {mask_url(cfg.gitops.repository or '')}"
    print(f"{cfg.registry.model_name}: {where} (branch {cfg.gitops.branch})")
    for status in statuses:
        print("\n".join(status.to_lines()))
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from refinery.client import ServiceClient, read_texts

    cfg = _config(args)
    client = ServiceClient(args.url or f"http://{cfg.serving.host}:{cfg.serving.port}")
    if args.wait:
        client.wait_ready(args.wait)
    texts = read_texts(args.input, cfg.data.text_column, args.limit)
    results = client.classify(texts, batch_size=cfg.serving.max_batch_items)
    counts: dict[str, int] = {}
    for text, result in zip(texts, results, strict=True):
        counts[result["label"]] = counts.get(result["label"], 0) + 1
        if args.show:
            print(f"{result['label']:>10} {max(result['scores'].values()):.3f}  {text[:90]}")
    print(f"classified {len(texts)} texts with {client.url}: {counts}")
    return EXIT_OK


def cmd_feedback(args: argparse.Namespace) -> int:
    from refinery.client import ServiceClient, read_labelled

    cfg = _config(args)
    client = ServiceClient(args.url or f"http://{cfg.serving.host}:{cfg.serving.port}")
    rows = read_labelled(args.input, cfg.data.text_column, cfg.data.label_column, args.limit)
    first: dict[str, str] = {}
    for text, label in rows:
        first.setdefault(text, label)  # a text takes one label: the first one the file gives it
    unique = list(first.items())
    if len(unique) < len(rows):
        print(f"skipping {len(rows) - len(unique)} repeated text(s): a text takes one label")
    rows = unique
    ids = client.feedback(
        [{"text": text, "label": label} for text, label in rows], batch_size=cfg.serving.max_batch_items
    )
    counts: dict[str, int] = {}
    for _, label in rows:
        counts[label] = counts.get(label, 0) + 1
    print(f"posted {len(ids)} labelled texts to {client.url}/feedback: {counts}")
    return EXIT_OK


def cmd_loop_summary(args: argparse.Namespace) -> int:
    from refinery.monitoring.story import loop_story

    print(loop_story(_config(args)).to_text())
    return EXIT_OK


def cmd_monitor(args: argparse.Namespace) -> int:
    from refinery.orchestration.retrain import monitor_round

    cfg = _config(args)

    shown: list[str] = []

    def announce(text: str) -> None:
        shown.append(text)
        print(text, flush=True)

    def show(text: str) -> None:
        print(text, flush=True)

    # As `refinery run` hands it over: a cluster configuration's paths resolve where the steps run, and
    # a cluster configuration's run goes to the Kubeflow Pipelines API.
    done = monitor_round(cfg, read_config(args.config, args.overrides), announce=announce, show=show)
    for line in done.alias_lines():
        print(line)
    decision = done.decision
    if not shown:
        print(decision.to_text())
    else:
        # The signals were shown before any retrain's output; what is left is where it was recorded.
        lines = [f"recorded: {decision.action} (decision {decision.decision_id})"]
        if decision.retrain_run_id:
            lines.append(f"retrain run: {decision.retrain_run_id}")
        if decision.drift is not None:
            lines.append(f"drift report: {decision.drift.report}")
        print("\n".join(lines))
    # --exit-code: a retraining run started is the verdict a scheduler reads (the CronJob's drift alert).
    return EXIT_FAILED if args.exit_code and decision.action == "fired" else EXIT_OK
