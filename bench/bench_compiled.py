"""The core compiled with mypyc against the pure one: a replay's events per second, compiled / pure.

Copies the package twice into a temporary folder and compiles the pure modules of the core in one
copy with mypyc (``COMPILED``: no I/O, no asyncio; the extension modules next to their sources).
Then it replays the same generated capture file (~1 KB events, a 50-rule table) with
``replay --dry-run --processes 1`` in a fresh process of each copy, alternating round after round
(the order swapped each round), and prints each form's median events per second (the best of
``--repeat`` replays in each process; the CLI in-process: read, decode, reorder, evaluate, account,
report) and the median of the rounds' ratios compiled / pure. The bar for shipping the compiled
form: at least 1.3x.

It compiles nothing, and says why, without a C compiler, the Python headers, mypyc (it comes with
mypy) or setuptools (which a virtual environment of Python 3.12 or later lacks).

    python -m bench.bench_compiled [--events N] [--rounds R] [--repeat R] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import worker
from bench.bench_replay import replay_args, write_file
from bench.tables import base_filters, prefixed_filters, rules_yaml

#: The modules compiled: the partition's core and what it stands on. Left out: ``errors`` (the
#: class attributes of compiled exception classes, such as ``reason``, are missing at run time) and
#: ``settings`` (a compiled frozen dataclass cannot be unpickled, and the settings cross processes).
COMPILED = (
    "core/accounting",
    "core/bounded",
    "core/decoding",
    "core/filters",
    "core/memos",
    "core/ordering",
    "core/partition",
    "core/positions",
    "core/remember",
    "core/rules",
    "core/state",
    "checkpoints/marks",
    "events",
    "jsontext",
    "keys",
    "moments",
)

_SETUP = """
from setuptools import setup
from mypyc.build import mypycify

setup(name="worker-compiled", py_modules=[], ext_modules=mypycify({args!r}))
"""

#: Run in a copy of the package: the best of ``repeat`` replays, and whether the core was compiled.
_REPLAY = """
import contextlib, importlib.machinery, io, sys, time
import worker.core.partition
from worker.cli import main

compiled = worker.core.partition.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
best = float("inf")
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(sys.argv[2:])
    if code != 0:
        sys.exit(code)
    best = min(best, time.perf_counter() - start)
print("compiled" if compiled else "pure", best)
"""


def missing_tools() -> list[str]:
    """What compiling needs and this environment lacks."""
    missing = []
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        missing.append(f"a C compiler ({compiler})")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        missing.append("the Python headers (Python.h)")
    packages = {"mypyc": "mypy", "setuptools": "setuptools"}
    missing += [
        f"{name} (pip install {package})" for name, package in packages.items() if not importlib.util.find_spec(name)
    ]
    return missing


def copy_package(root: Path) -> Path:
    """A copy of the package's sources under ``root``."""
    source = Path(worker.__file__).parent
    shutil.copytree(source, root / "worker", ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
    return root


def compile_core(root: Path) -> float:
    """Compiles ``COMPILED`` in the copy under ``root``, with the project's mypy settings; the seconds taken."""
    args = [f"worker/{name}.py" for name in COMPILED]
    config = Path(worker.__file__).parent.parent / "pyproject.toml"
    if config.is_file():
        args = ["--config-file", str(config), *args]
    (root / "setup.py").write_text(_SETUP.format(args=args))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise SystemExit(f"mypyc failed (exit code {done.returncode}):\n{tail}")
    return time.perf_counter() - start


def replay_rate(root: Path, form: str, args: list[str], events: int, repeat: int) -> float:
    """Events per second of the best of ``repeat`` replays in a fresh process of the copy at ``root``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", _REPLAY, str(repeat), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {form} replay failed (exit code {done.returncode}):\n{done.stderr[-2000:]}")
    ran, seconds = done.stdout.split()[-2:]
    if ran != form:
        raise SystemExit(f"the {form} copy imported the {ran} core: {root}")
    return events / float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (a fresh process of each form)")
    parser.add_argument("--repeat", type=int, default=2, help="replays in each process, the best counted")
    parser.add_argument("--workdir", type=Path, help="keep the copies and files here (default: a temporary folder)")
    args = parser.parse_args()

    missing = missing_tools()
    if missing:
        print(f"skipped: compiling the core needs {', '.join(missing)}")
        return

    with tempfile.TemporaryDirectory() as scratch:
        work = args.workdir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        roots = {"pure": copy_package(work / "pure"), "compiled": copy_package(work / "compiled")}
        seconds = compile_core(roots["compiled"])
        print(f"compiled with mypyc in {seconds:.0f} s: {len(COMPILED)} modules of worker/ ({', '.join(COMPILED)})")

        rules = work / "rules-50.yaml"
        rules.write_text(rules_yaml(base_filters() + prefixed_filters(40)))
        source = write_file(work / "capture", args.events, seed=1)
        replay = replay_args(rules, source)
        print(
            f"replay --dry-run --processes 1 of {args.events:,} events (50-rule table): best of {args.repeat} "
            f"in a fresh process of each form, {args.rounds} alternating rounds"
        )
        rates: dict[str, list[float]] = {form: [] for form in roots}
        for round_ in range(args.rounds):
            for form in list(roots) if round_ % 2 == 0 else reversed(roots):
                rates[form].append(replay_rate(roots[form], form, replay, args.events, args.repeat))
        for form, runs in rates.items():
            print(
                f"  {form:<9} {statistics.median(runs):>10,.0f} events/s  "
                f"(rounds: {', '.join(f'{rate:,.0f}' for rate in runs)})"
            )
        ratios = [c / p for p, c in zip(rates["pure"], rates["compiled"], strict=True)]
        print(
            f"  compiled / pure: {statistics.median(ratios):.2f}x (median of {args.rounds}; rounds "
            f"{', '.join(f'{r:.2f}x' for r in ratios)}; the bar for shipping it: at least 1.3x)"
        )


if __name__ == "__main__":
    main()
