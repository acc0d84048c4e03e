"""The supported Pythons: one range, said alike by pyproject.toml, the tools' targets, CI and the set-up's
choice of interpreter (``scripts/pick-python``, run here on stand-in interpreters); and the Makefile's
virtual environment, built again when another interpreter built it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
PICK = ROOT / "scripts" / "pick-python"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: The interpreter running the tests, by its real path: a supported one.
REAL = os.path.realpath(sys.executable)


def _ordered(versions: list[str]) -> list[str]:
    return sorted(versions, key=lambda version: tuple(int(part) for part in version.split(".")))


def test_one_range_of_supported_pythons() -> None:
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    in_range = [f"3.{minor}" for minor in range(40) if requires.contains(f"3.{minor}")]
    classifiers = [
        text.rsplit(" :: ", 1)[1]
        for text in PYPROJECT["project"]["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", text)
    ]
    listed = re.search(r"^SUPPORTED=\(([^)]*)\)", PICK.read_text(), re.MULTILINE)
    assert listed, f"{PICK}: no SUPPORTED=(...) line"

    assert _ordered(classifiers) == in_range, "pyproject.toml: the classifiers and requires-python disagree"
    assert _ordered(listed[1].split()) == in_range, f"{PICK}: SUPPORTED and pyproject's requires-python disagree"
    oldest = in_range[0]
    assert PYPROJECT["tool"]["mypy"]["python_version"] == oldest
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py" + oldest.replace(".", "")
    assert f"python{oldest}" in (ROOT / ".ci" / "run").read_text(), ".ci/run does not test the oldest supported"


def _interpreters(bin_dir: Path, interpreters: dict[str, str | None]) -> None:
    """Stand-ins on PATH: each answers pick-python's check as a supported interpreter at the path given,
    or, for None, as one that is not supported (an older version, or a pyenv shim that refuses to run)."""
    bin_dir.mkdir()
    for name, path in interpreters.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho {path}\n" if path else "#!/bin/sh\nexit 1\n")
        script.chmod(0o755)


def _program(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not on PATH"
    return path


def _pick(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bash = _program("bash")
    return subprocess.run(
        [bash, str(PICK), *args], env={"PATH": str(bin_dir)}, capture_output=True, text=True, check=False
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("interpreters", "args", "picked"),
    [
        pytest.param({"python3": "/py/3", "python3.13": "/py/3.13"}, [], "/py/3", id="python3-when-supported"),
        pytest.param(
            {"python3": None, "python3.11": "/py/3.11", "python3.12": "/py/3.12"}, [], "/py/3.12", id="else-newest"
        ),
        pytest.param({"python3.11": "/py/3.11"}, [], "/py/3.11", id="no-python3"),
        pytest.param(
            {"python3": "/py/3", "python3.13": None, "python3.12": "/py/3.12", "python3.11": "/py/3.11"},
            ["--newest"],
            "/py/3.12",
            id="newest-working",
        ),
        pytest.param({"python3": "/py/3", "python3.11": "/py/3.11"}, ["python3.11"], "/py/3.11", id="named"),
    ],
)
def test_pick_python_chooses(tmp_path: Path, interpreters: dict[str, str | None], args: list[str], picked: str) -> None:
    _interpreters(tmp_path / "bin", interpreters)
    done = _pick(tmp_path / "bin", *args)
    assert (done.returncode, done.stdout) == (0, f"{picked}\n"), done.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    ("interpreters", "args", "tried"),
    [
        pytest.param({"python3": None, "python3.10": "/py/3.10"}, [], "python3 python3.13 python3.12 python3.11"),
        pytest.param({"python3.12": None}, ["--newest"], "python3.13 python3.12 python3.11"),
        pytest.param({}, ["python3.12"], "python3.12"),
    ],
)
def test_pick_python_fails_naming_the_supported_versions(
    tmp_path: Path, interpreters: dict[str, str | None], args: list[str], tried: str
) -> None:
    _interpreters(tmp_path / "bin", interpreters)
    done = _pick(tmp_path / "bin", *args)
    assert (done.returncode, done.stdout) == (1, "")
    assert f"no supported Python found (tried {tried}): the worker runs on Python 3.11 to 3.13" in done.stderr


@pytest.mark.integration
def test_pick_python_checks_a_real_interpreters_version(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").symlink_to(REAL)
    # The same interpreter, told that only a version it is not is supported: its check is what rejects it.
    (tmp_path / "bin" / "python3.12").write_text(f'#!/bin/sh\nexec {REAL} "$1" "$2" 3.99\n')
    (tmp_path / "bin" / "python3.12").chmod(0o755)

    assert _pick(tmp_path / "bin").stdout == f"{REAL}\n"
    assert _pick(tmp_path / "bin", "python3.12").returncode == 1


@pytest.mark.integration
@pytest.mark.parametrize(("built_with", "rebuilt"), [(REAL, False), ("/elsewhere/bin/python3.11", True)])
def test_make_builds_the_environment_again_for_another_interpreter(
    tmp_path: Path, built_with: str, rebuilt: bool
) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text(f"include-system-site-packages = false\nexecutable = {built_with}\n")
    (venv / ".installed").touch()

    done = subprocess.run(
        [_program("make"), "--dry-run", f"PYTHON={REAL}", f"VENV={venv}", str(venv / ".installed")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (f"{REAL} -m venv --clear {venv}\n" in done.stdout) is rebuilt, done.stdout
    assert ("-m venv" in done.stdout) is rebuilt, done.stdout
