"""The package's layout: its rooms and their import contracts, what the pure commands load, and whether
the maps drawn in docstrings are true."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "worker"
#: The network and cloud libraries, and the rooms doing I/O, that the pure commands must not load.
IO_LIBRARIES = ("aiohttp", "aiosmtplib", "azure.eventhub", "azure.identity", "azure.storage")
IO_ROOMS = (
    "worker.live", "worker.replay", "worker.admin", "worker.checkpoints", "worker.localhub", "worker.sending",
    "worker.driver", "worker.actions.delivery",
)  # fmt: skip


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def test_the_package_top_holds_about_a_dozen_modules() -> None:
    """The command line and what every room shares; everything else lives in its role's folder."""
    top = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem not in ("__init__", "__main__"))
    assert len(top) <= 12, f"{len(top)} modules at the top of worker/: {top}"


def test_every_room_says_what_it_is_and_what_it_may_use() -> None:
    rooms = sorted(path.parent for path in PACKAGE.rglob("__init__.py") if path.parent != PACKAGE)
    assert len(rooms) >= 9
    for room in rooms:
        docstring = ast.get_docstring(ast.parse((room / "__init__.py").read_text())) or ""
        assert "May use" in docstring, f"{room.relative_to(ROOT)}/__init__.py does not say what the room may use"


@pytest.mark.integration
def test_the_import_contracts_hold_and_a_broken_one_fails_with_import_linters_message(tmp_path: Path) -> None:
    """``lint-imports`` (run by ``make lint``) on a copy of the package: kept as it is, then broken on
    purpose, the core importing the live worker."""
    shutil.copytree(PACKAGE, tmp_path / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)

    def lint() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    kept = lint()
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "0 broken" in kept.stdout
    rules = tmp_path / "worker" / "core" / "rules.py"
    source = rules.read_text()
    rules.write_text(
        source.replace("from worker.core.filters import", "import worker.live.run\nfrom worker.core.filters import", 1)
    )
    broken = lint()
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "worker.core is not allowed to import worker.live:" in broken.stdout
    assert re.search(r"worker\.core\.rules -> worker\.live\.run \(l\.\d+\)", broken.stdout), broken.stdout
    assert re.search(r"The core is pure.*\n?.* BROKEN", broken.stdout), broken.stdout


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
    assert "worker.rulefiles.loading" in loaded  # the import log is read right
    offending = sorted(name for name in loaded if name.startswith(IO_LIBRARIES + IO_ROOMS))
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
