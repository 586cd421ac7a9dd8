"""A stand-in for the Kubeflow Pipelines API server, for tests: no KFP API server can run on this machine.

It is not Kubeflow. It serves, over real HTTP on loopback, the KFP **v2beta1** REST endpoints refinery's
commands call through the kfp SDK's client (kfp.Client and its generated kfp_server_api package), with
real in-memory state: pipelines (create, multipart upload, upload_version, get, list), pipeline versions,
experiments, runs (create, get, list, with state and task details) and recurring runs (create, get, list,
enable, disable, delete), and healthz. Field names, enum values, filters and page tokens follow
backend/api/v2beta1/swagger/*.swagger.json of kubeflow/pipelines and what kfp_server_api reads: snake_case
fields, ``recurringRuns`` in its list response, int64 values (``max_concurrency``, ``interval_second``)
as strings, errors as ``google.rpc.Status`` with the HTTP status of the gRPC code.

Nothing runs a pipeline here: a test drives a run's state (:meth:`KfpServer.set_run_state`, or
:meth:`KfpServer.script_next_run` for the states successive reads of the next run show), adds the runs a
recurring run would have started (:meth:`KfpServer.add_run`), makes the N-th call of an endpoint fail
(:meth:`KfpServer.fail`), and reads every call the server received (:attr:`KfpServer.calls`), headers
included. What the real server would refuse and refinery relies on being refused is refused here too:
duplicate names (409), a recurring run without exactly one trigger or with max_concurrency outside 1..10,
a run or recurring run naming a missing experiment or pipeline version or a parameter the pipeline does
not take, and, in multi-user mode, listing without a namespace.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

API = "/apis/v2beta1"
# google.rpc.Code of an HTTP status, as grpc-gateway maps them.
_GRPC_CODE = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13, 503: 14}
_OPERATIONS = {
    1: "EQUALS",
    2: "NOT_EQUALS",
    3: "GREATER_THAN",
    5: "GREATER_THAN_EQUALS",
    6: "LESS_THAN",
    7: "LESS_THAN_EQUALS",
    8: "IN",
    9: "IS_SUBSTRING",
}
FINAL_STATES = {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"}


class ApiError(Exception):
    """An error answer: HTTP ``status`` with a google.rpc.Status body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Call:
    """One request the server received."""

    method: str
    path: str
    route: str  # "POST /apis/v2beta1/recurringruns/{id}:enable": what fail() names
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any

    @property
    def mutating(self) -> bool:
        return self.method != "GET"


@dataclass
class _Failure:
    route: str
    nth: int
    status: int
    message: str


@dataclass
class _Script:
    steps: deque[tuple[str, dict[str, str]]]
    error: str | None


_clock = {"last": datetime.min.replace(tzinfo=UTC)}
_clock_lock = threading.Lock()


def _now() -> str:
    """The time, strictly later than the last one given: sorting by created_at is never a tie."""
    with _clock_lock:
        now = max(datetime.now(UTC), _clock["last"] + timedelta(microseconds=1))
        _clock["last"] = now
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _id() -> str:
    return str(uuid.uuid4())


def _predicate_value(predicate: Mapping[str, Any]) -> Any:
    for key in ("string_value", "stringValue", "int_value", "intValue", "long_value", "longValue"):
        if key in predicate:
            return predicate[key]
    for key in ("string_values", "stringValues"):
        if key in predicate:
            return list(predicate[key].get("values", []))
    raise ApiError(400, f"filter predicate {predicate} has no value")


def _matches(item: Mapping[str, Any], raw_filter: str | None) -> bool:
    if not raw_filter:
        return True
    try:
        parsed = json.loads(raw_filter)
    except ValueError:
        raise ApiError(400, f"Invalid input error: filter {raw_filter!r} is not JSON") from None
    for predicate in parsed.get("predicates", []):
        operation = predicate.get("operation", predicate.get("op"))
        operation = _OPERATIONS.get(operation, operation)
        key, value = predicate["key"], _predicate_value(predicate)
        actual = item.get(key)
        if operation == "EQUALS":
            ok = actual == value
        elif operation == "NOT_EQUALS":
            ok = actual != value
        elif operation == "IS_SUBSTRING":
            ok = isinstance(actual, str) and str(value) in actual
        elif operation == "IN":
            ok = actual in value
        else:
            raise ApiError(400, f"Invalid input error: filter operation {operation} is not supported here")
        if not ok:
            return False
    return True


class KfpServer:
    """The stand-in server; start it with ``with KfpServer() as server:`` and point the client at
    :attr:`url`.

    Args:
        multi_user: Answer healthz with ``multi_user: true`` and require a namespace when listing
            experiments, runs and recurring runs (or an experiment id), as a multi-user Kubeflow does.
        token: When set, every call must carry ``Authorization: Bearer <token>`` (else HTTP 401).
        max_page_size: The most items a list answer holds, whatever the call asks for (small, so that
            the client's paging is exercised).
    """

    def __init__(self, *, multi_user: bool = False, token: str | None = None, max_page_size: int = 2) -> None:
        self.multi_user = multi_user
        self.token = token
        self.max_page_size = max_page_size
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring_runs: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self._counts: dict[str, int] = {}
        self._failures: list[_Failure] = []
        self._scripts: deque[_Script] = deque()
        self._run_scripts: dict[str, _Script] = {}
        self._lock = threading.RLock()
        self._routes: list[tuple[str, str, re.Pattern[str], Callable[..., Any]]] = []
        for method, template, handler in self._table():
            pattern = re.escape(API + template).replace(r"\{id\}", "([^/:]+)").replace(r"\{vid\}", "([^/:]+)")
            self._routes.append((method, f"{method} {API}{template}", re.compile(pattern + "$"), handler))
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None, "the server is not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> KfpServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload = server._dispatch(self.command, self.path, dict(self.headers.items()), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="kfp-stand-in", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> KfpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what tests drive --------------------------------------------------------------------------

    def fail(self, route: str, nth: int = 1, status: int = 500, message: str = "injected failure") -> None:
        """Answer the ``nth`` call of ``route`` (from now on; e.g. ``"POST /apis/v2beta1/recurringruns"``
        or ``"DELETE /apis/v2beta1/recurringruns/{id}"``) with HTTP ``status``."""
        with self._lock:
            known = {name for _, name, _, _ in self._routes}
            if route not in known:
                raise ValueError(f"unknown route {route!r}; known: {sorted(known)}")
            self._failures.append(_Failure(route, self._counts.get(route, 0) + nth, status, message))

    def script_next_run(self, steps: list[tuple[str, Mapping[str, str]]], error: str | None = None) -> None:
        """The next run created goes through ``steps``, one per read of the run: (run state, task name ->
        task state). A FAILED task carries ``error``."""
        with self._lock:
            self._scripts.append(_Script(deque((s, dict(t)) for s, t in steps), error))

    def set_run_state(
        self, run_id: str, state: str, tasks: Mapping[str, str] | None = None, error: str | None = None
    ) -> None:
        """Put a run in ``state`` with the given tasks (name -> state) under the pipeline's root DAG task;
        FAILED tasks carry ``error``, and so does the root when the run failed."""
        with self._lock:
            run = self.runs[run_id]
            run["state"] = state
            run["state_history"].append({"update_time": _now(), "state": state})
            if state in FINAL_STATES:
                run["finished_at"] = _now()
            root_id = f"{run_id}-root"
            children, details = [], []
            for index, (name, task_state) in enumerate((tasks or {}).items()):
                task_id = f"{run_id}-task-{index}"
                task: dict[str, Any] = {
                    "run_id": run_id,
                    "task_id": task_id,
                    "display_name": name,
                    "state": task_state,
                    "parent_task_id": root_id,
                    "pod_name": f"{name}-{index}",
                    "create_time": _now(),
                }
                if task_state == "FAILED" and error:
                    task["error"] = {"code": 2, "message": error}
                children.append({"task_id": task_id, "pod_name": task["pod_name"]})
                details.append(task)
            root: dict[str, Any] = {
                "run_id": run_id,
                "task_id": root_id,
                "display_name": "root",
                "state": state if state in FINAL_STATES else "RUNNING",
                "child_tasks": children,
            }
            if state == "FAILED" and error:
                root["error"] = {"code": 2, "message": error}
            run["run_details"] = {"task_details": [root, *details]}

    def add_run(
        self, recurring_run_id: str, state: str = "SUCCEEDED", name: str = "scheduled"
    ) -> dict[str, Any]:
        """A run the recurring run started (as the scheduled workflow controller would)."""
        with self._lock:
            recurring = self.recurring_runs[recurring_run_id]
            run = self._new_run(
                {
                    "display_name": name,
                    "experiment_id": recurring["experiment_id"],
                    "pipeline_version_reference": recurring["pipeline_version_reference"],
                    "runtime_config": recurring["runtime_config"],
                },
                recurring_run_id=recurring_run_id,
            )
            self.set_run_state(run["run_id"], state)
            return run

    def mutations(self) -> list[Call]:
        """The calls that would change something (every method but GET)."""
        return [call for call in self.calls if call.mutating]

    # ---- dispatch ----------------------------------------------------------------------------------

    def _dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        query = {key: values[0] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        lowered = {key.lower(): value for key, value in headers.items()}
        with self._lock:
            for route_method, route, pattern, handler in self._routes:
                match = pattern.match(parts.path)
                if route_method != method or match is None:
                    continue
                parsed = self._body(lowered, body)
                self.calls.append(Call(method, parts.path, route, query, lowered, parsed))
                self._counts[route] = self._counts.get(route, 0) + 1
                try:
                    self._check_auth(lowered)
                    for failure in list(self._failures):
                        if failure.route == route and failure.nth == self._counts[route]:
                            self._failures.remove(failure)
                            raise ApiError(failure.status, failure.message)
                    return 200, handler(*match.groups(), query=query, body=parsed)
                except ApiError as exc:
                    code = _GRPC_CODE.get(exc.status, 2)
                    return exc.status, {
                        "error": exc.message,
                        "code": code,
                        "message": exc.message,
                        "details": [],
                    }
            self.calls.append(Call(method, parts.path, "", query, lowered, None))
            return 404, {"error": "Not Found", "code": 5, "message": f"no route {method} {parts.path}"}

    def _check_auth(self, headers: Mapping[str, str]) -> None:
        if self.token and headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthenticated: missing or wrong bearer token")

    @staticmethod
    def _body(headers: Mapping[str, str], body: bytes) -> Any:
        if not body:
            return None
        content_type = headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            message = BytesParser(policy=HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + body
            )
            files = {}
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                files[str(name)] = (part.get_filename(), part.get_payload(decode=True))
            return {"files": files}
        return json.loads(body)

    def _table(self) -> list[tuple[str, str, Callable[..., Any]]]:
        return [
            ("GET", "/healthz", self._healthz),
            ("GET", "/pipelines", self._list_pipelines),
            ("POST", "/pipelines", self._create_pipeline),
            ("POST", "/pipelines/upload", self._upload),
            ("POST", "/pipelines/upload_version", self._upload_version),
            ("GET", "/pipelines/names/{id}", self._pipeline_by_name),
            ("GET", "/pipelines/{id}", self._get_pipeline),
            ("GET", "/pipelines/{id}/versions", self._list_versions),
            ("GET", "/pipelines/{id}/versions/{vid}", self._get_version),
            ("GET", "/experiments", self._list_experiments),
            ("POST", "/experiments", self._create_experiment),
            ("GET", "/experiments/{id}", self._get_experiment),
            ("GET", "/runs", self._list_runs),
            ("POST", "/runs", self._create_run),
            ("GET", "/runs/{id}", self._get_run),
            ("GET", "/recurringruns", self._list_recurring),
            ("POST", "/recurringruns", self._create_recurring),
            ("GET", "/recurringruns/{id}", self._get_recurring),
            ("DELETE", "/recurringruns/{id}", self._delete_recurring),
            ("POST", "/recurringruns/{id}:enable", self._enable),
            ("POST", "/recurringruns/{id}:disable", self._disable),
        ]

    # ---- helpers -----------------------------------------------------------------------------------

    def _page(self, items: list[dict[str, Any]], query: Mapping[str, str], key: str) -> dict[str, Any]:
        items = [item for item in items if _matches(item, query.get("filter"))]
        sort_by = query.get("sort_by", "").strip()
        if sort_by:
            field_name, _, direction = sort_by.partition(" ")
            items.sort(key=lambda item: str(item.get(field_name) or ""), reverse=direction.strip() == "desc")
        start = int(query.get("page_token") or 0)
        size = min(int(query.get("page_size") or 0) or self.max_page_size, self.max_page_size)
        page = items[start : start + size]
        after = start + size
        return {
            key: page,
            "total_size": len(items),
            "next_page_token": str(after) if after < len(items) else "",
        }

    def _require_namespace(self, query: Mapping[str, str], what: str) -> None:
        if self.multi_user and not query.get("namespace") and not query.get("experiment_id"):
            raise ApiError(400, f"Invalid input error: in multi-user mode, listing {what} needs a namespace")

    def _experiment(self, experiment_id: str | None) -> dict[str, Any]:
        if not experiment_id or experiment_id not in self.experiments:
            raise ApiError(404, f"NotFoundError: experiment {experiment_id!r} not found")
        return self.experiments[experiment_id]

    def _version_spec(self, reference: Mapping[str, Any] | None) -> dict[str, Any]:
        reference = reference or {}
        version = self.versions.get(str(reference.get("pipeline_version_id")))
        if version is None or version["pipeline_id"] != reference.get("pipeline_id"):
            raise ApiError(404, f"NotFoundError: pipeline version {dict(reference)} not found")
        return version

    @staticmethod
    def _check_parameters(version: Mapping[str, Any], runtime_config: Mapping[str, Any] | None) -> None:
        spec = version["pipeline_spec"]
        spec = spec.get("pipeline_spec", spec)
        declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
        unknown = set((runtime_config or {}).get("parameters") or {}) - set(declared)
        if unknown:
            raise ApiError(400, f"Invalid input error: the pipeline has no parameters {sorted(unknown)}")

    # ---- healthz -----------------------------------------------------------------------------------

    def _healthz(self, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        return {"multi_user": self.multi_user, "pipeline_store": "database"}

    # ---- pipelines ---------------------------------------------------------------------------------

    def _new_pipeline(self, name: str, display_name: str, description: str, namespace: str) -> dict[str, Any]:
        if any(p["name"] == name and p["namespace"] == namespace for p in self.pipelines.values()):
            raise ApiError(409, f"AlreadyExistsError: pipeline {name!r} already exists")
        pipeline = {
            "pipeline_id": _id(),
            "name": name,
            "display_name": display_name,
            "description": description,
            "namespace": namespace,
            "created_at": _now(),
        }
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        return pipeline

    def _new_version(
        self, pipeline_id: str, name: str, display_name: str, description: str, upload: Any
    ) -> dict[str, Any]:
        if pipeline_id not in self.pipelines:
            raise ApiError(404, f"NotFoundError: pipeline {pipeline_id!r} not found")
        if any(v["pipeline_id"] == pipeline_id and v["name"] == name for v in self.versions.values()):
            raise ApiError(409, f"AlreadyExistsError: pipeline version {name!r} already exists")
        filename, content = (upload or {}).get("files", {}).get("uploadfile", (None, None))
        if not filename or not content or not str(filename).endswith((".yaml", ".yml", ".json")):
            raise ApiError(
                400, f"Invalid input error: unexpected upload {filename!r} (a .yaml, .yml or .json file)"
            )
        try:
            documents = [doc for doc in yaml.safe_load_all(content) if doc]
        except yaml.YAMLError as exc:
            raise ApiError(400, f"Invalid input error: the pipeline spec is not YAML: {exc}") from None
        if not documents or "pipelineInfo" not in documents[0]:
            raise ApiError(400, "Invalid input error: no pipeline spec (pipelineInfo) in the upload")
        spec: dict[str, Any] = documents[0]
        if len(documents) > 1:
            spec = {"pipeline_spec": documents[0], "platform_spec": documents[1]}
        version: dict[str, Any] = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": _id(),
            "name": name,
            "display_name": display_name,
            "description": description,
            "created_at": _now(),
            "pipeline_spec": spec,
        }
        self.versions[version["pipeline_version_id"]] = version
        return version

    def _list_pipelines(self, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        namespace = query.get("namespace", "")
        items = [p for p in self.pipelines.values() if p["namespace"] == namespace]
        return self._page(items, query, "pipelines")

    def _create_pipeline(self, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        body = body or {}
        name = body.get("name") or body.get("display_name")
        if not name:
            raise ApiError(400, "Invalid input error: a pipeline needs a name")
        return self._new_pipeline(
            name, body.get("display_name") or name, body.get("description", ""), body.get("namespace") or ""
        )

    def _upload(self, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        files = (body or {}).get("files", {})
        filename = files.get("uploadfile", ("",))[0] or ""
        name = query.get("name") or query.get("display_name") or str(filename).rsplit(".", 1)[0]
        pipeline = self._new_pipeline(
            name, query.get("display_name") or name, query.get("description", ""), query.get("namespace", "")
        )
        try:
            self._new_version(pipeline["pipeline_id"], name, name, query.get("description", ""), body)
        except ApiError:
            del self.pipelines[pipeline["pipeline_id"]]
            raise
        return pipeline

    def _upload_version(self, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        name = query.get("name") or query.get("display_name")
        if not name:
            raise ApiError(400, "Invalid input error: a pipeline version needs a name")
        return self._new_version(
            query.get("pipelineid", ""),
            name,
            query.get("display_name") or name,
            query.get("description", ""),
            body,
        )

    def _pipeline_by_name(self, name: str, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        namespace = query.get("namespace", "")
        for pipeline in self.pipelines.values():
            if pipeline["name"] == name and pipeline["namespace"] == namespace:
                return pipeline
        raise ApiError(404, f"NotFoundError: pipeline {name!r} not found")

    def _get_pipeline(self, pipeline_id: str, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        if pipeline_id not in self.pipelines:
            raise ApiError(404, f"NotFoundError: pipeline {pipeline_id!r} not found")
        return self.pipelines[pipeline_id]

    def _list_versions(self, pipeline_id: str, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        self._get_pipeline(pipeline_id, query, body)
        items = [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id]
        return self._page(items, query, "pipeline_versions")

    def _get_version(
        self, pipeline_id: str, version_id: str, query: Mapping[str, str], body: Any
    ) -> dict[str, Any]:
        version = self.versions.get(version_id)
        if version is None or version["pipeline_id"] != pipeline_id:
            raise ApiError(404, f"NotFoundError: pipeline version {version_id!r} not found")
        return version

    # ---- experiments -------------------------------------------------------------------------------

    def _list_experiments(self, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        self._require_namespace(query, "experiments")
        namespace = query.get("namespace", "")
        items = [e for e in self.experiments.values() if not namespace or e["namespace"] == namespace]
        return self._page(items, query, "experiments")

    def _create_experiment(self, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        body = body or {}
        name, namespace = body.get("display_name"), body.get("namespace") or ""
        if not name:
            raise ApiError(400, "Invalid input error: an experiment needs a display_name")
        if self.multi_user and not namespace:
            raise ApiError(400, "Invalid input error: in multi-user mode an experiment needs a namespace")
        if any(e["display_name"] == name and e["namespace"] == namespace for e in self.experiments.values()):
            raise ApiError(409, f"AlreadyExistsError: experiment {name!r} already exists")
        experiment = {
            "experiment_id": _id(),
            "display_name": name,
            "description": body.get("description", ""),
            "namespace": namespace,
            "created_at": _now(),
            "storage_state": "AVAILABLE",
        }
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _get_experiment(self, experiment_id: str, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        return self._experiment(experiment_id)

    # ---- runs --------------------------------------------------------------------------------------

    def _new_run(self, body: Mapping[str, Any], recurring_run_id: str | None = None) -> dict[str, Any]:
        experiment = self._experiment(body.get("experiment_id"))
        version = self._version_spec(body.get("pipeline_version_reference"))
        self._check_parameters(version, body.get("runtime_config"))
        if not body.get("display_name"):
            raise ApiError(400, "Invalid input error: a run needs a display_name")
        run: dict[str, Any] = {
            "run_id": _id(),
            "experiment_id": experiment["experiment_id"],
            "display_name": body["display_name"],
            "description": body.get("description", ""),
            "storage_state": "AVAILABLE",
            "pipeline_version_reference": dict(body["pipeline_version_reference"]),
            "runtime_config": dict(body.get("runtime_config") or {}),
            "service_account": body.get("service_account") or "pipeline-runner",
            "created_at": _now(),
            "scheduled_at": _now(),
            "state": "PENDING",
            "state_history": [{"update_time": _now(), "state": "PENDING"}],
            "run_details": {"task_details": []},
        }
        if recurring_run_id:
            run["recurring_run_id"] = recurring_run_id
        self.runs[run["run_id"]] = run
        return run

    def _create_run(self, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        run = self._new_run(body or {})
        if self._scripts:
            self._run_scripts[run["run_id"]] = self._scripts.popleft()
        return run

    def _get_run(self, run_id: str, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        if run_id not in self.runs:
            raise ApiError(404, f"NotFoundError: run {run_id!r} not found")
        script = self._run_scripts.get(run_id)
        if script and script.steps:
            state, tasks = script.steps.popleft()
            self.set_run_state(run_id, state, tasks, script.error)
        return self.runs[run_id]

    def _list_runs(self, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        self._require_namespace(query, "runs")
        experiment_id, namespace = query.get("experiment_id"), query.get("namespace")
        items = [
            r
            for r in self.runs.values()
            if (not experiment_id or r["experiment_id"] == experiment_id)
            and (not namespace or self.experiments[r["experiment_id"]]["namespace"] == namespace)
        ]
        return self._page(items, query, "runs")

    # ---- recurring runs ----------------------------------------------------------------------------

    def _create_recurring(self, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        body = body or {}
        experiment = self._experiment(body.get("experiment_id"))
        version = self._version_spec(body.get("pipeline_version_reference"))
        self._check_parameters(version, body.get("runtime_config"))
        if not body.get("display_name"):
            raise ApiError(400, "Invalid input error: a recurring run needs a display_name")
        trigger = body.get("trigger") or {}
        cron, periodic = trigger.get("cron_schedule"), trigger.get("periodic_schedule")
        if bool(cron) == bool(periodic):
            raise ApiError(400, "Invalid input error: a recurring run needs exactly one trigger")
        if cron and len(str(cron.get("cron", "")).split()) != 6:
            raise ApiError(400, f"Invalid input error: invalid cron {cron.get('cron')!r} (6 fields)")
        if periodic:
            if int(periodic.get("interval_second") or 0) < 1:
                raise ApiError(400, "Invalid input error: interval_second must be positive")
            periodic = {**periodic, "interval_second": str(int(periodic["interval_second"]))}
        concurrency = int(body.get("max_concurrency") or 1)
        if not 1 <= concurrency <= 10:
            raise ApiError(400, "Invalid input error: max concurrency must be in the range [1, 10]")
        mode = body.get("mode")
        if mode not in ("ENABLE", "DISABLE"):
            raise ApiError(400, f"Invalid input error: mode {mode!r} (ENABLE or DISABLE)")
        recurring = {
            "recurring_run_id": _id(),
            "display_name": body["display_name"],
            "description": body.get("description", ""),
            "pipeline_version_reference": dict(body["pipeline_version_reference"]),
            "runtime_config": dict(body.get("runtime_config") or {}),
            "service_account": body.get("service_account") or "pipeline-runner",
            "max_concurrency": str(concurrency),
            "trigger": {"cron_schedule": cron} if cron else {"periodic_schedule": periodic},
            "mode": mode,
            "status": "ENABLED" if mode == "ENABLE" else "DISABLED",
            "no_catchup": bool(body.get("no_catchup")),
            "namespace": experiment["namespace"],
            "experiment_id": experiment["experiment_id"],
            "created_at": _now(),
            "updated_at": _now(),
        }
        self.recurring_runs[recurring["recurring_run_id"]] = recurring
        return recurring

    def _get_recurring(self, recurring_id: str, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        if recurring_id not in self.recurring_runs:
            raise ApiError(404, f"NotFoundError: recurring run {recurring_id!r} not found")
        return self.recurring_runs[recurring_id]

    def _list_recurring(self, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        self._require_namespace(query, "recurring runs")
        experiment_id, namespace = query.get("experiment_id"), query.get("namespace")
        items = [
            r
            for r in self.recurring_runs.values()
            if (not experiment_id or r["experiment_id"] == experiment_id)
            and (not namespace or r["namespace"] == namespace)
        ]
        return self._page(items, query, "recurringRuns")

    def _delete_recurring(self, recurring_id: str, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        self._get_recurring(recurring_id, query, body)
        del self.recurring_runs[recurring_id]
        return {}

    def _set_mode(self, recurring_id: str, enabled: bool) -> dict[str, Any]:
        recurring = self._get_recurring(recurring_id, {}, None)
        recurring["mode"] = "ENABLE" if enabled else "DISABLE"
        recurring["status"] = "ENABLED" if enabled else "DISABLED"
        recurring["updated_at"] = _now()
        return {}

    def _enable(self, recurring_id: str, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        return self._set_mode(recurring_id, True)

    def _disable(self, recurring_id: str, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        return self._set_mode(recurring_id, False)
