"""The azure-eventhub SDK's own live tests, run against local hubs.

The tests ship in the SDK's source distribution (``tests/livetest``). They are fetched from the
package index at test time, pinned to the installed SDK's version and to the distribution's digest,
unpacked beside :mod:`conftest_template` (which takes the place of the SDK's own conftest), and run
by pytest in a subprocess whose JUnit report is read back here.

    python -m tests.sdk_livetests.suite [PYTEST_ARGS...]    # run them by hand, in a temporary folder
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PACKAGE: Final = "azure-eventhub"
#: The source distribution whose tests run, and its digest on the package index.
VERSION: Final = "5.15.1"
SHA256: Final = "201de7b6e10b7517c594e529aa7d21c6887ac2a4757fc4850c991a3f640a02fb"
HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parents[1]
#: Per test: a test that hangs fails on its own instead of stopping the run.
TEST_TIMEOUT: Final = 240

#: The test's property holding what the run came to, for the session's summary (tests/conftest.py prints it).
SUMMARY: Final = "sdk_livetests_summary"

_INI: Final = """\
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
"""


class SuiteError(RuntimeError):
    """The SDK's tests could not be fetched, unpacked or run."""


@dataclass(frozen=True, slots=True)
class Outcome:
    test: str
    #: passed, failed, error or skipped
    result: str
    #: the failure's message or the skip's reason
    detail: str = ""


def fetch(cache: Path) -> Path:
    """The SDK's source distribution, downloaded once into ``cache`` and checked against its digest."""
    installed = importlib.metadata.version(PACKAGE)
    if installed != VERSION:
        raise SuiteError(
            f"the installed {PACKAGE} is {installed}, the live tests pinned here are {VERSION}'s: "
            f"update VERSION and SHA256 in {Path(__file__).name} with the SDK"
        )
    sdist = cache / f"{PACKAGE.replace('-', '_')}-{VERSION}.tar.gz"
    if not sdist.exists() or _digest(sdist) != SHA256:
        cache.mkdir(parents=True, exist_ok=True)
        requirement = cache / "requirement.txt"
        requirement.write_text(f"{PACKAGE}=={VERSION} --hash=sha256:{SHA256}\n")
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"]
        done = subprocess.run(
            [*pip, "--no-binary", ":all:", "--require-hashes", "-r", str(requirement), "-d", str(cache)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not sdist.exists():
            raise SuiteError(f"pip could not download {PACKAGE}=={VERSION}'s source distribution:\n{done.stderr}")
    if _digest(sdist) != SHA256:
        raise SuiteError(f"{sdist.name} does not have the digest pinned here")
    return sdist


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unpack(sdist: Path, into: Path) -> Path:
    """Unpack the live tests and the SDK's test helper they import; put our conftest in place of the
    SDK's. Returns the folder to run pytest in."""
    prefix = f"{PACKAGE.replace('-', '_')}-{VERSION}/tests/"
    wanted = ("livetest/", "tracing_common.py")
    with tarfile.open(sdist) as archive:
        members = [
            m for m in archive.getmembers() if m.name.startswith(prefix) and m.name[len(prefix) :].startswith(wanted)
        ]
        if not members:
            raise SuiteError(f"{sdist.name} holds no {prefix}livetest")
        archive.extractall(into, members=members, filter="data")
    root = into / prefix.rstrip("/")
    shutil.copyfile(HERE / "conftest_template.py", root / "conftest.py")
    (root / "pytest.ini").write_text(_INI)
    return root


def run(root: Path, report: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run the unpacked tests (``args`` are pytest's), writing a JUnit report."""
    command = [sys.executable, "-m", "pytest", "livetest", "-c", "pytest.ini", "--rootdir", str(root)]
    command += ["-p", "no:cacheprovider", "-p", "no:cov", f"--timeout={TEST_TIMEOUT}", f"--junitxml={report}"]
    # --sleep False: the SDK's own switch, which closes a connection where a test would otherwise idle
    # past the service's 240 s idle timeout to see it closed.
    command += ["--sleep", "False", "-q", "-rfE", *args]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, check=False, timeout=timeout)


def outcomes(report: Path) -> list[Outcome]:
    """Every test case of a JUnit report, with its result."""
    found = []
    for case in ElementTree.parse(report).getroot().iter("testcase"):  # noqa: S314 - our own run's report
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        result, detail = "passed", ""
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                result = "failed" if kind == "failure" else kind
                detail = element.get("message", "") or (element.text or "")
                break
        found.append(Outcome(name, result, detail))
    return found


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="sdk-livetests-") as work:
        root = unpack(fetch(ROOT / ".pytest_cache" / "sdk-livetests"), Path(work))
        done = run(root, Path(work) / "report.xml", *argv)
        print(done.stdout[-20000:], done.stderr[-5000:], sep="\n")
        return done.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
