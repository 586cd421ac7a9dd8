"""The one entry point: ``refinery <command>``: the argument parser, the ``models`` commands' handlers,
and :func:`main`, which runs a command and turns its errors into exit statuses in one place.

The other commands' handlers are in :mod:`refinery.cli_commands`. Heavy libraries are imported inside
the commands, so ``refinery --help`` stays fast. Errors a user can cause (RefineryError) print one line
naming what is wrong, without a traceback, and exit with the error's status:

* 0: success;
* 1: the work ran and said no (the gate rejected, the data failed validation, drift fired with
  ``monitor --exit-code``, a promotion refused);
* 2: a usage or configuration error (bad flags or configuration, a missing or unreadable input);
* 3: a service could not be reached (registry, object store, git remote, Kubeflow Pipelines API,
  database, container registry);
* 70: a bug (an unexpected exception; its traceback is printed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from refinery.cli_commands import (
    _config,
    cmd_compile,
    cmd_config_schema,
    cmd_config_show,
    cmd_demo_data,
    cmd_feedback,
    cmd_images,
    cmd_loop_summary,
    cmd_monitor,
    cmd_predict,
    cmd_run,
    cmd_schedules_apply,
    cmd_schedules_diff,
    cmd_schedules_list,
    cmd_serve,
    cmd_status,
    cmd_submit,
    cmd_ui,
    cmd_validate,
)
from refinery.errors import EXIT_FAILED, EXIT_OK, ConfigError, RefineryError

if TYPE_CHECKING:
    from refinery.release.promote import PromotionRecord

#: An unexpected exception (a bug): its traceback is printed. Not 1, which Python gives an uncaught
#: exception, so that a job reading exit statuses (the monitor's CronJob) never takes a crash for a
#: verdict.
EXIT_INTERNAL = 70


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="YAML run configuration")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set training.epochs=2 (repeatable)",
    )


def cmd_models_list(args: argparse.Namespace) -> int:
    from refinery.registry.mlflow_registry import Registry

    registry = Registry(_config(args).registry)
    versions = registry.versions()
    if not versions:
        print(f"{registry.name}: no versions yet ({registry.uri})")
        return EXIT_OK
    print(f"{'version':>8}  {'aliases':<22}{'test macro-F1':>14}  {'gate':<34}pipeline run")
    for info in versions:
        tags = info.tags
        print(
            f"{info.version:>8}  {','.join(info.aliases) or '-':<22}{tags.get('test_macro_f1', '-'):>14}  "
            f"{tags.get('gate', '-'):<34}{tags.get('pipeline_run_id', '-')}"
        )
    return EXIT_OK


def cmd_models_show(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient

    from refinery.registry.mlflow_registry import Registry

    cfg = _config(args)
    registry = Registry(cfg.registry)
    info = registry.resolve(args.reference, environment=cfg.gitops.environment)
    print(
        f"{info.name} version {info.version}  aliases: {', '.join(info.aliases) or '-'}  run: {info.run_id}"
    )
    for key in sorted(info.tags):
        print(f"  {key}: {info.tags[key]}")
    uri = cfg.registry.tracking_uri
    card = (
        MlflowClient(tracking_uri=uri, registry_uri=uri)
        .get_model_version(info.name, info.version)
        .description
    )
    if card:
        print("\n" + card)
    return EXIT_OK


def _print_promotion(record: PromotionRecord) -> None:
    if record.pending:
        verb = "rollback to" if record.action == "rollback" else "promotion of"
        print(
            f"{verb} {record.name} version {record.version} in {record.environment} waits for review: "
            f"branch {record.pending_branch} (commit {record.commit[:12]}, bento {record.bento_tag});"
            f" champion-{record.environment} stays on "
            f"{'no version' if record.previous is None else f'version {record.previous}'}"
        )
        if record.compare_url:
            print(f"review and merge it: {record.compare_url}")
        else:
            print(f"merge it: {record.merge_hint}")
        print(f"then `refinery models sync --env {record.environment}` moves champion-{record.environment}")
        return
    if not record.changed:
        print(
            f"{record.name} version {record.version} is already the champion of {record.environment}: "
            f"gitops commit {record.commit[:12]}, bento {record.bento_tag}"
        )
        return
    verb = "rolled back to" if record.action == "rollback" else "promoted"
    replaced = f", replacing version {record.previous}" if record.previous else ""
    print(
        f"{verb} {record.name} version {record.version} in {record.environment}{replaced}: "
        f"gitops commit {record.commit[:12]}, bento {record.bento_tag}"
    )


def cmd_models_promote(args: argparse.Namespace) -> int:
    from refinery.errors import GateRejected
    from refinery.release.flows import promote_manually, promote_to_environment

    force_reason = (args.reason or "") if args.force else None
    if args.env is not None:
        if args.data:
            raise ConfigError(
                "--data applies without --env: promotion to an environment reads the gate record"
            )
        try:
            record = promote_to_environment(
                _config(args),
                args.env,
                source=args.source,
                reference=args.reference,
                force_reason=force_reason,
            )
        except GateRejected as exc:
            print(f"not promoted: {exc}")
            return EXIT_FAILED
        _print_promotion(record)
        return EXIT_OK
    if args.source is not None:
        raise ConfigError("--from applies with --env: it names the environment to promote from")
    if args.reference is None:
        raise ConfigError(
            "name the version to promote (or --env ENV to promote what another environment serves)"
        )
    outcome = promote_manually(
        _config(args),
        args.reference,
        force_reason=force_reason,
        data_dir=Path(args.data) if args.data else None,
    )
    print("\n".join(outcome.decision.to_lines()))
    if outcome.record is None:
        why = "it is no change from the champion" if outcome.decision.no_change else "the gate rejected it"
        print(f"not promoted: {why} (--force --reason TEXT overrides, and is recorded)")
        return EXIT_FAILED
    _print_promotion(outcome.record)
    return EXIT_OK


def cmd_models_rollback(args: argparse.Namespace) -> int:
    from refinery.release.flows import rollback

    _print_promotion(rollback(_config(args), args.to, args.reason or "", environment=args.env))
    return EXIT_OK


def cmd_models_sync(args: argparse.Namespace) -> int:
    from refinery.release.sync import sync_aliases

    results = sync_aliases(_config(args), args.env or None)
    for result in results:
        print(f"{result.environment}: {result.outcome}: {result.message}")
    return EXIT_FAILED if any(result.outcome == "refused" for result in results) else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from refinery.orchestration.compiling import PIPELINES

    parser = argparse.ArgumentParser(prog="refinery", description="A model-refinement loop on Kubernetes.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "run",
        help="run the training pipeline locally (kfp.local); exit 1 if a step failed or the run promoted"
        " nothing (the gate rejected the challenger)",
    )
    _add_config_args(p)
    p.add_argument(
        "--runner",
        choices=["subprocess", "docker"],
        default="subprocess",
        help="subprocess: steps run in this environment; docker: each step runs in the project image on"
        " the engine DOCKER_HOST names, or on a podman service started for the run (default: subprocess)",
    )
    p.add_argument(
        "--image",
        help="with --runner docker, the image for every step (default: localhost/refinery:<version>-<sha>)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show kfp.local's full output")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compile", help="write a pipeline's IR YAML for Kubeflow Pipelines")
    p.add_argument("-o", "--output", help="the file to write (default: build/<pipeline>-pipeline.yaml)")
    p.add_argument(
        "--pipeline",
        choices=list(PIPELINES),
        default="training",
        help="training, or monitoring (the drift monitor's one step) (default: training)",
    )
    p.add_argument(
        "-c",
        "--config",
        required=True,
        help="a cluster configuration (state_dir: null): the run form's defaults, the resource profiles"
        " (resources.<environment>), retry policies and credentials",
    )
    p.add_argument(
        "--registry",
        help="registry the images are pulled from, e.g. registry.acme.example/ml (default: images.registry)",
    )
    p.add_argument(
        "--image", help="project image for every step (default: <registry>/refinery:<version>-<sha>)"
    )
    p.add_argument(
        "--gpu-image", help="image for finetune (default: <registry>/refinery-gpu:<version>-<sha>)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set resources.prod.finetune_retries=5 (repeatable)",
    )
    p.add_argument(
        "--environment", help="which entry of resources applies (default: the config's gitops.environment)"
    )
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser(
        "submit",
        help="start a run in Kubeflow Pipelines (the KFP API kfp.host or REFINERY_KFP_HOST names) from a"
        " cluster configuration, compiled as `refinery compile` does; prints the run's link",
    )
    _add_config_args(p)
    p.add_argument(
        "--pipeline", choices=list(PIPELINES), default="training", help="which pipeline (default: training)"
    )
    p.add_argument("--experiment", help="the experiment the run goes to (default: kfp.experiment)")
    p.add_argument("--run-name", help="the run's display name (default: <pipeline>-<UTC time>)")
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the run to its end, printing each change of state; exit 1 if it fails, naming the step",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=86400.0,
        metavar="S",
        help="with --wait: stop waiting after S seconds, exit 1 (default: 86400)",
    )
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "schedules", help="recurring runs in Kubeflow Pipelines kept in a YAML file: apply, diff, list"
    )
    schedules = p.add_subparsers(dest="schedules_command", required=True, metavar="{apply,diff,list}")
    s = schedules.add_parser(
        "apply",
        help="create, replace, enable or pause the recurring runs so that they match the file; pause (or"
        " delete) those refinery created that it no longer declares",
    )
    s.add_argument("-f", "--file", required=True, help="the schedules file, e.g. configs/schedules.yaml")
    s.set_defaults(func=cmd_schedules_apply)
    s = schedules.add_parser("diff", help="print what apply would change, changing nothing")
    s.add_argument("-f", "--file", required=True, help="the schedules file, e.g. configs/schedules.yaml")
    s.set_defaults(func=cmd_schedules_diff)
    s = schedules.add_parser(
        "list", help="each recurring run: trigger, status, pipeline version, last run, managed by refinery"
    )
    s.add_argument("-f", "--file", help="a schedules file: its Kubeflow, and its schedules not applied yet")
    s.add_argument("-c", "--config", help="or a configuration naming the Kubeflow (kfp.host)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    s.set_defaults(func=cmd_schedules_list)

    p = sub.add_parser("images", help="print the image names this version builds and runs")
    p.add_argument(
        "--registry", default="localhost", help="registry prefix (default: localhost, podman's local storage)"
    )
    p.set_defaults(func=cmd_images)

    p = sub.add_parser("config", help="inspect configuration")
    config_sub = p.add_subparsers(dest="config_command", required=True)
    c = config_sub.add_parser("schema", help="print the JSON schema of a run configuration")
    c.set_defaults(func=cmd_config_schema)
    c = config_sub.add_parser(
        "show", help="print a configuration with overrides applied and locations resolved"
    )
    _add_config_args(c)
    c.add_argument(
        "--parameters",
        action="store_true",
        help="print instead the pipeline parameters compiled from it (JSON): the Kubeflow run form's values",
    )
    c.set_defaults(func=cmd_config_show)

    p = sub.add_parser(
        "validate", help="run the data validation suite on a dataset (exit 0 pass, 1 fail, 2 unusable)"
    )
    _add_config_args(p)
    p.add_argument("--data", help="dataset path or URI (default: data.uri from the config)")
    p.add_argument(
        "-o",
        "--output",
        help="report folder (default: <state_dir>/validation, or ./validation without a state_dir)",
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("demo-data", help="generate the demo review dataset and its drifted variant")
    p.add_argument("-o", "--output", default="data/demo")
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--seed", type=int, default=13)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser(
        "serve",
        help="serve the champion's Bento with BentoML (without -c: the release REFINERY_BENTO_URI names,"
        " as the serving container does)",
    )
    p.add_argument(
        "-c", "--config", help="YAML run configuration (default: serve the release the environment names)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--host", default="0.0.0.0", help="without -c: interface to listen on (default: 0.0.0.0)")
    p.add_argument("--port", type=int, default=3000, help="without -c: port to listen on (default: 3000)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("ui", help="browse the registry's versions with the MLflow UI (mlflow server)")
    _add_config_args(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="port to listen on (default: 5000)")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("models", help="the registered versions: list, show, promote, roll back, sync aliases")
    models = p.add_subparsers(
        dest="models_command", required=True, metavar="{list,show,promote,rollback,sync}"
    )
    m = models.add_parser("list", help="every version with its aliases, test macro-F1 and gate verdict")
    _add_config_args(m)
    m.set_defaults(func=cmd_models_list)
    m = models.add_parser("show", help="one version's tags and model card")
    _add_config_args(m)
    m.add_argument(
        "reference",
        nargs="?",
        help="NAME@ALIAS, NAME/VERSION, @ALIAS (e.g. @champion-prod) or VERSION (default: the champion of"
        " gitops.environment)",
    )
    m.set_defaults(func=cmd_models_show)
    m = models.add_parser(
        "promote",
        help="evaluate a version against gitops.environment's champion, gate it, package it if needed and"
        " promote it there; with --env, promote what another environment serves through its gate record",
    )
    _add_config_args(m)
    m.add_argument(
        "reference",
        nargs="?",
        help="NAME@ALIAS, NAME/VERSION, @ALIAS or VERSION (with --env, default: what --from serves)",
    )
    m.add_argument(
        "--env",
        help="promote to this environment what --from serves, if its recorded gate decision passed (same"
        " Bento and image); a protected environment gets a review branch",
    )
    m.add_argument(
        "--from",
        dest="source",
        metavar="ENV",
        help="with --env, the environment whose champion to promote (default: gitops.environment)",
    )
    m.add_argument(
        "--data",
        help="prepared dataset folder whose test.parquet to evaluate on (default: the test set the "
        "version was evaluated on when registered)",
    )
    m.add_argument(
        "--force", action="store_true", help="promote even if the gate rejects it (needs --reason)"
    )
    m.add_argument("--reason", help="why; recorded in the version's tags and the GitOps commit")
    m.set_defaults(func=cmd_models_promote)
    m = models.add_parser("rollback", help="make an earlier version champion again, with its GitOps commit")
    _add_config_args(m)
    m.add_argument("--to", help="the version to go back to (default: the one the champion replaced)")
    m.add_argument("--reason", help="why; recorded in the version's tags and the GitOps commit")
    m.add_argument("--env", help="the environment to roll back (default: gitops.environment)")
    m.set_defaults(func=cmd_models_rollback)
    m = models.add_parser(
        "sync",
        help="move each environment's champion alias to the version its overlay on the GitOps branch names"
        " (after a review branch was merged); exit 1 when one is refused",
    )
    _add_config_args(m)
    m.add_argument(
        "--env",
        action="append",
        default=[],
        help="only this environment (repeatable; default: every overlay)",
    )
    m.set_defaults(func=cmd_models_sync)

    p = sub.add_parser(
        "status",
        help="per environment: the champion alias, the overlay on the GitOps branch, pending review branches"
        " and, with --kubeconfig, the running Deployment",
    )
    _add_config_args(p)
    p.add_argument(
        "--kubeconfig", help="read each environment's Deployment refinery-serving with this kubeconfig"
    )
    p.add_argument("--context", help="the kubeconfig context (default: its current one)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("predict", help="send texts from a CSV file to a running service")
    _add_config_args(p)
    p.add_argument("--input", required=True, help="CSV with the config's text column")
    p.add_argument("--limit", type=int, help="send only the first N texts")
    p.add_argument("--url", help="service URL (default: serving.host and serving.port)")
    p.add_argument(
        "--wait", type=float, default=0, help="wait up to this many seconds for the service to be ready"
    )
    p.add_argument("--show", action="store_true", help="print each prediction")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "feedback", help="post true labels of texts from a CSV file to a running service's /feedback"
    )
    _add_config_args(p)
    p.add_argument("--input", required=True, help="CSV with the config's text and label columns")
    p.add_argument("--limit", type=int, help="send only the first N rows")
    p.add_argument("--url", help="service URL (default: serving.host and serving.port)")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("monitor", help="check the inference log for drift and trigger retraining")
    _add_config_args(p)
    p.add_argument(
        "--exit-code",
        action="store_true",
        help="exit 1 when drift started a retraining run (default: 0 whatever the decision); a crash exits"
        f" {EXIT_INTERNAL}, a usage or configuration error 2, an unreachable service 3",
    )
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser(
        "loop-summary",
        help="the refinement loop so far: each version's scores on the established and new test rows, and"
        " each monitor decision with the signal that fired",
    )
    _add_config_args(p)
    p.set_defaults(func=cmd_loop_summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except RefineryError as exc:
        # The one place an error becomes an exit status: the error's class says which (refinery.errors).
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception:
        import traceback

        traceback.print_exc()
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
