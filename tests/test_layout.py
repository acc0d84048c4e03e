"""The package's layout: what imports what, how high the import graph stands, what the pure commands
load, and whether the maps drawn in docstrings are true."""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "worker"
#: The network and cloud libraries that the pure commands must not load.
IO_LIBRARIES = ("aiohttp", "aiosmtplib", "azure.eventhub", "azure.identity", "azure.storage")
MAX_FLOORS = 12


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def _imports(path: Path) -> set[str]:
    """Every ``worker`` module ``path`` imports, at the top or inside a function, as written."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "worker"}


def _room(name: str) -> str | None:
    """The room a module stands in: itself, or its subpackage (``actions/``, ``localhub/``) as a whole;
    None for the package face and ``__main__``."""
    parts = name.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return None
    return ".".join(parts[:2])


@functools.cache
def _module_graph() -> dict[str, set[str]]:
    modules = dict(_modules())
    return {
        name: {imported for imported in _imports(path) if imported in modules and imported != name}
        for name, path in modules.items()
    }


@functools.cache
def _room_graph() -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for name, imported in _module_graph().items():
        room = _room(name)
        if room is None:
            continue
        targets = rooms.setdefault(room, set())
        targets.update(r for i in imported if (r := _room(i)) is not None and r != room)
    return rooms


def _floors(graph: dict[str, set[str]]) -> dict[str, int]:
    heights: dict[str, int] = {}

    def height(node: str, path: tuple[str, ...]) -> int:
        if node in path:
            raise AssertionError(f"an import cycle: {' -> '.join((*path[path.index(node) :], node))}")
        if node not in heights:
            heights[node] = 1 + max((height(d, (*path, node)) for d in graph[node]), default=0)
        return heights[node]

    for node in graph:
        height(node, ())
    return heights


def test_no_module_imports_one_of_its_own_importers() -> None:
    _floors(_module_graph())  # raises naming the cycle
    _floors(_room_graph())


def test_the_import_graph_stands_at_most_twelve_floors_high() -> None:
    floors = _floors(_room_graph())
    top = max(floors.values())
    tallest = sorted(floors, key=floors.__getitem__, reverse=True)[:3]
    assert top <= MAX_FLOORS, f"{top} floors (at most {MAX_FLOORS}); the tallest: {tallest}"


def test_the_floor_count_sees_a_cycle_and_the_height() -> None:
    assert _floors({"a": {"b"}, "b": {"c"}, "c": set()}) == {"a": 3, "b": 2, "c": 1}
    with pytest.raises(AssertionError, match="a -> b -> a"):
        _floors({"a": {"b"}, "b": {"a"}})


@pytest.mark.integration
@pytest.mark.parametrize(
    "command",
    [
        ["validate", "--skip-secrets", "rules/default.yaml"],
        ["validate", "--skip-secrets", "rules/examples.yaml"],
        ["explain", "--rules", "rules/examples.yaml", "-"],
        ["test", "rules/tests/examples.test.yaml"],
    ],
    ids=["validate-default", "validate-examples", "explain", "test"],
)
def test_the_pure_commands_load_no_network_library(command: list[str]) -> None:
    body = b'[{"id": "e", "eventType": "T", "subject": "s", "eventTime": "2026-11-01T09:00:00Z", "data": {}}]'
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "worker", *command],
        cwd=ROOT,
        input=body,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    loaded = {line.rpartition("|")[2].strip() for line in done.stderr.decode().splitlines() if "|" in line}
    assert "worker.rulesfile" in loaded  # the import log is read right
    offending = sorted(name for name in loaded if name.startswith(IO_LIBRARIES))
    assert offending == [], f"python -m worker {' '.join(command)} loads {offending}"


def test_every_module_says_first_what_it_holds() -> None:
    for name, path in _modules():
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        if name == "worker" or path.name == "__main__.py":
            continue
        assert docstring, f"{path.relative_to(ROOT)} has no docstring"
        first = docstring.splitlines()[0]
        assert len(first) > 20, f"{path.relative_to(ROOT)}: {first!r}"
        assert first.endswith((".", ":")), f"{path.relative_to(ROOT)}: the first line is not a sentence: {first!r}"


def test_the_error_trees_name_every_error_of_the_worker() -> None:
    """worker/errors.py draws every error; the local hub's own errors are drawn in its errors module."""
    bases: dict[str, tuple[str, set[str]]] = {}  # class name -> (module, names of its bases)
    for name, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = (name, {b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases})

    def is_error(name: str, root: str = "WorkerError") -> bool:
        return name == root or any(is_error(base, root) for base in bases.get(name, ("", set()))[1])

    errors = [name for name in bases if is_error(name)]
    assert len(errors) > 20  # the walk finds them
    trees = {module: ast.get_docstring(ast.parse(path.read_text())) or "" for module, path in _modules()}
    for error in errors:
        local = is_error(error, "LocalHubError") and error != "LocalHubError"
        tree = "worker.localhub.errors" if local else "worker.errors"
        assert re.search(rf"\b{error}\b", trees[tree]), f"{bases[error][0]}.{error} is missing from the tree of {tree}"


def test_the_architecture_page_names_every_module() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    for name, path in _modules():
        parts = name.split(".")[1:]
        if not parts or path.name in ("__init__.py", "__main__.py"):
            continue
        shown = parts[-1] if parts[0] == "localhub" else "/".join(parts)
        assert f"`{shown}`" in page, f"docs/architecture.md does not name {path.relative_to(ROOT)} (as `{shown}`)"
