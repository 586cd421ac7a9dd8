"""Reading a configuration: YAML and ``--set`` overrides, validation with dotted paths in the messages,
the pipeline's parameters, and the configuration of one pipeline step."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from refinery.config.locations import is_uri, resolve
from refinery.config.run import _PLACEHOLDERS, SECTIONS, RunConfig, _NotGiven
from refinery.errors import ConfigError


def step_config(**sections: Mapping[str, Any]) -> RunConfig:
    """The configuration of one pipeline step, made of the resolved sections it is given.

    A step's component receives only the sections it reads (so the Kubeflow UI shows them and caching
    keys on them); the rest are absent, and reading one raises instead of silently using a default.

    Raises:
        ConfigError: A section is unknown or invalid (the message names the key).
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown configuration section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}"
        )
    tree: dict[str, Any] = {name: dict(value) for name, value in sections.items()}
    for name, placeholder in _PLACEHOLDERS.items():
        tree.setdefault(name, placeholder)
    tree["state_dir"] = None
    cfg = parse_config(tree, "the step's configuration sections", sections=sections)
    return cfg.model_copy(update={name: _NotGiven(name) for name in SECTIONS if name not in sections})


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        if not e["loc"]:
            # The cross-section rules: each line names the dotted paths it relates.
            lines += [f"  {line}" for line in msg.removeprefix("Value error, ").splitlines()]
            continue
        path = ".".join(str(p) for p in e["loc"])
        lines.append(f"  {path}: {msg}")
    return f"invalid configuration in {source}:\n" + "\n".join(lines)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


class _ConfigLoader(yaml.SafeLoader):
    """YAML as a configuration is written: only ``true``/``false`` are booleans. YAML 1.1, which PyYAML
    follows, also reads ``on``/``off``/``yes``/``no`` as booleans, which turns ``severity: off`` into
    false and the key of ``significance: {on: new}`` into true."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: plain data only


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a raw config tree; values are parsed as YAML scalars or lists."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.epochs=2")
        try:
            value = _yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML: {exc}") from exc
        _set_dotted(tree, key.strip(), value)
    return tree


def parse_config(
    tree: dict[str, Any], source: str = "<config>", *, sections: Collection[str] | None = None
) -> RunConfig:
    """Validate a raw config tree, turning pydantic errors into a ConfigError naming each dotted path.

    Args:
        tree: The configuration as read.
        source: What messages call it (its file name).
        sections: The sections ``tree`` really gives, when the others are placeholders (a pipeline
            step's configuration): rules relating a section outside them are not checked.
    """
    context = None if sections is None else {"sections": tuple(sections)}
    try:
        return RunConfig.model_validate(tree, context=context)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def _tree(text: str, source: str) -> dict[str, Any]:
    try:
        tree = _yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    return tree


def load_config(path: str | Path, overrides: list[str] | None = None, base: Path | None = None) -> RunConfig:
    """Read a YAML run configuration, apply ``--set`` overrides, validate and resolve it.

    Args:
        path: The YAML file.
        overrides: ``dotted.key=value`` strings applied after reading the file.
        base: Directory that relative paths are resolved against (default: the working directory).

    Raises:
        ConfigError: The file is missing or not YAML, or a key is unknown or mistyped.
    """
    return resolve(read_config(path, overrides), base)


def read_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read and validate a YAML run configuration with ``--set`` overrides, without resolving it.

    Raises:
        ConfigError: The file is missing or not YAML, or a key is unknown or mistyped.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    tree = apply_overrides(_tree(text, str(path)), overrides or [])
    return parse_config(tree, str(path))


#: The settings a pipeline run takes as typed parameters (the Kubeflow UI's run form): parameter name
#: -> dotted configuration key. They are applied on top of the ``config`` parameter.
RUN_PARAMETERS: dict[str, str] = {
    "data_uri": "data.uri",
    "test_uri": "data.test_uri",
    "epochs": "training.epochs",
    "learning_rate": "training.learning_rate",
    "environment": "gitops.environment",
}


#: Settings fixed when the pipeline is compiled (they shape the pods, not the run), and where it is
#: submitted (kfp): left out of the ``config`` parameter.
COMPILE_TIME_SECTIONS = ("resources", "images", "storage", "kfp")


def _dotted(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def run_parameters(cfg: RunConfig) -> dict[str, Any]:
    """The typed pipeline parameters of ``cfg``, as the run form shows them (an empty test URI: none)."""
    tree = cfg.to_dict()
    values = {name: _dotted(tree, key) for name, key in RUN_PARAMETERS.items()}
    values["test_uri"] = values["test_uri"] or ""
    values["epochs"] = float(values["epochs"])
    return values


def _difference(value: Any, default: Any) -> Any:
    """The parts of a JSON tree that differ from ``default`` (nested mappings compared key by key)."""
    if not (isinstance(value, dict) and isinstance(default, dict)):
        return value
    changed = {}
    for key, item in value.items():
        if key not in default:
            changed[key] = item
        elif item != default[key]:
            changed[key] = _difference(item, default[key])
    return changed


def config_text(cfg: RunConfig) -> str:
    """The ``config`` pipeline parameter: ``cfg`` without the settings at their defaults, the typed run
    parameters or the compile-time sections, so that the run form shows what is particular to this
    configuration (a few hundred bytes instead of the whole tree).

    A section is shortened only where the shortened form reads back to the same section (a rule whose
    default differs from its class's, such as ``data.validation.text_length``, would not); otherwise it
    is kept whole. It is written as JSON on one line (JSON is YAML): kfp writes each parameter's default
    into a comment line at the top of the compiled file, and a default spanning lines would break out of
    it.
    """
    full = cfg.model_dump(mode="json")
    required = {
        "data": {k: full["data"][k] for k in ("uri", "labels")},
        "model": {"base": full["model"]["base"]},
    }
    default = RunConfig.model_validate(required).model_dump(mode="json")
    tree: dict[str, Any] = {}
    for name, value in full.items():
        # The required keys always go in: a section holding nothing else equals the default built from them.
        if name in COMPILE_TIME_SECTIONS or (value == default[name] and name not in required):
            continue
        short = _difference(value, default[name])
        if isinstance(short, dict):
            short = {**required.get(name, {}), **short}
            probe = parse_config({**required, name: short}, "the configuration parameter", sections=[name])
            if getattr(probe, name) != getattr(cfg, name):
                short = value
        tree[name] = short
    for key in RUN_PARAMETERS.values():
        section, _, field = key.rpartition(".")
        tree.get(section, {}).pop(field, None)
    return json.dumps(tree, separators=(",", ":"))


def config_for_run(config: str, parameters: Mapping[str, Any], base: Path | None = None) -> RunConfig:
    """The configuration a pipeline run uses: the ``config`` parameter with the typed parameters on top.

    Args:
        config: YAML text, or the URI of a YAML file (``s3://``, ``https://``, an absolute path; read
            through fsspec).
        parameters: Values of :data:`RUN_PARAMETERS` (an empty ``test_uri`` means none).
        base: Directory relative paths are resolved against (default: the working directory).

    Raises:
        ConfigError: The file cannot be read, is not YAML or is not a valid configuration; a cluster
            configuration names a local path (see :func:`resolve`).
    """
    tree, source = _parameter_tree(config)
    for name, key in RUN_PARAMETERS.items():
        if name in parameters:
            value = parameters[name]
            _set_dotted(tree, key, None if name == "test_uri" and not value else value)
    return resolve(parse_config(tree, source), base)


def _parameter_tree(config: str) -> tuple[dict[str, Any], str]:
    """The raw tree of a ``config`` pipeline parameter (YAML text, or the URI of a YAML file) and the
    name errors give it."""
    source = "pipeline parameter 'config'"
    text = config
    stripped = config.strip()
    if "\n" not in stripped and (is_uri(stripped) or stripped.startswith("/")):
        import fsspec

        source = stripped
        try:
            with fsspec.open(stripped, "r", encoding="utf-8") as fh:
                text = fh.read()
        except Exception as exc:  # fsspec back-ends raise their own errors (FileNotFoundError, ClientError)
            raise ConfigError(
                f"cannot read the configuration {stripped}: {type(exc).__name__}: {exc}"
            ) from None
    return _tree(text, source), source


def config_from_parameter(config: str) -> RunConfig:
    """A whole configuration handed to a pipeline as one parameter (:func:`config_as_written`, or the
    URI of a YAML file), validated but not resolved.

    Raises:
        ConfigError: The file cannot be read, is not YAML or is not a valid configuration.
    """
    tree, source = _parameter_tree(config)
    return parse_config(tree, source)


def config_as_written(cfg: RunConfig) -> str:
    """``cfg`` whole, compile-time sections included, as the settings it was given (the defaults left
    out), on one line of JSON: the parameter of a pipeline that compiles another one from it."""
    return json.dumps(cfg.model_dump(mode="json", exclude_unset=True), separators=(",", ":"))


def json_schema() -> dict[str, Any]:
    """The JSON schema of a run configuration."""
    return RunConfig.model_json_schema()
