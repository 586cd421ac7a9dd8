"""The refinery modules a service imports, found by reading its import statements.

A Bento ships the service and the refinery sources it runs, nothing else: not the training code, not the
demo data generator. :func:`import_closure` starts from the service's files and follows every ``import``
and ``from ... import`` of a refinery module, function-local imports included, through the modules they
name, transitively; a package's ``__init__.py`` comes with each module under it. Imports under
``if TYPE_CHECKING:`` are not followed: they never run. The walk is static (nothing is imported), so a
module reached only through ``importlib.import_module`` with a computed name would be missed; refinery
has none on the serving path, and the Bento tests serve a built Bento to prove it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

from refinery.errors import PackagingError


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imported_names(source: str, module: str, is_package: bool, filename: str = "<source>") -> set[str]:
    """Dotted names a module's import statements may refer to as modules.

    ``import a.b`` gives ``a.b``; ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a module or
    a name inside ``a``); relative imports are resolved against ``module``.

    Raises:
        PackagingError: The source is not valid Python; the message names the file.
    """
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise PackagingError(f"{filename} cannot be parsed: {exc}") from None
    names: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _module_file(root: Path, package: str, name: str) -> Path | None:
    """The file of module ``name`` (dotted, starting with ``package``) under ``root``, the package's
    folder; None when it is not a module there."""
    relative = name.split(".")[1:]
    path = root.joinpath(*relative)
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if relative and path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def import_closure(entry_files: Iterable[Path], package_root: Path) -> list[Path]:
    """The files of the package at ``package_root`` that ``entry_files`` import, directly or not.

    Args:
        entry_files: The service's own files (e.g. ``serving/service.py``), outside the package.
        package_root: The package's folder (``.../refinery``); its name is the top-level name followed.

    Returns:
        The package's files the entry files need, relative to ``package_root``'s parent, sorted; each
        module's parent packages (their ``__init__.py``) included.

    Raises:
        PackagingError: A file cannot be parsed.
    """
    package = package_root.name
    todo: list[str] = []
    for entry in entry_files:
        todo.extend(imported_names(entry.read_text(encoding="utf-8"), entry.stem, False, str(entry)))
    found: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name != package and not name.startswith(f"{package}."):
            continue
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            path = _module_file(package_root, package, prefix)
            if path is None or prefix in found:
                continue
            found[prefix] = path
            source = path.read_text(encoding="utf-8")
            todo.extend(imported_names(source, prefix, path.name == "__init__.py", str(path)))
    return sorted(path.relative_to(package_root.parent) for path in found.values())
