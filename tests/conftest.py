"""Fixtures shared by the test modules: real servers, started once per session; and the guard that
keeps the ``integration`` marker honest."""

from __future__ import annotations

import gc
import logging
import platform
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import structlog
from hypothesis import HealthCheck, settings

from tests.probe import ACTIVE, Probe
from tests.sdk_livetests.suite import SUMMARY
from tests.servers import Azurite, HubServer, ServerError, start_azurite, start_localhub, stop
from tests.targets import Certificate, HttpTarget, make_certificate
from worker.log import HANDLER_NAME

Server = TypeVar("Server", Azurite, HubServer)

#: What only a test marked ``integration`` may do: reach a server, or start a process.
IO_EVENTS = frozenset({"socket.connect", "subprocess.Popen", "os.posix_spawn", "os.fork"})
#: The audit events of the running test, or None between tests.
_done: set[str] | None = None


def _audit(event: str, _args: tuple[object, ...]) -> None:
    if _done is not None and event in IO_EVENTS:
        _done.add(event)


sys.addaudithook(_audit)

# Property tests judge what the code does, never how long it took: the suite runs its tests side by
# side, often with other work on the cores, so hypothesis's time limits per example (its deadline, and
# the health check of slow data generation) would fail tests for the machine's load.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")
# platform asks `uname -p` once, when a library first wants the processor's name (azure-identity's
# user agent, at import): asked here, so that the guard below does not blame the first test to import one.
platform.uname().processor  # noqa: B018 - evaluated for its cache


@pytest.fixture(autouse=True)
def pure_unless_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test without the ``integration`` marker (``make test-fast`` runs those alone) fails if it
    connects to a server or starts a process."""
    global _done  # noqa: PLW0603 - the audit hook, installed once, reads it
    _done = set()
    try:
        yield
        done = sorted(_done)
    finally:
        _done = None
    if done and request.node.get_closest_marker("integration") is None:
        pytest.fail(f"this test does I/O ({', '.join(done)}): mark it @pytest.mark.integration", pytrace=False)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite's blob service on a free loopback port, with its data in a temporary directory.

    Azurite is part of the test bed (``make test`` installs it): when it is missing, the tests that
    use it fail, saying how to install it.
    """
    yield from _running(start_azurite, tmp_path_factory.mktemp("azurite"))


@pytest.fixture(scope="session")
def localhub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """The local hub (``python -m worker localhub``) on a free loopback port, for the whole session.

    Tests share it: each one reads from the positions it sent to, or from a partition of its own.
    """
    yield from _running(start_localhub, tmp_path_factory.mktemp("localhub"))


def _running(start: Callable[[Path], Server], location: Path) -> Iterator[Server]:
    """A server started in ``location`` for as long as the generator runs; a failed start fails the test."""
    try:
        server = start(location)
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    stop(server)


@pytest.fixture(autouse=True)
def default_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults, whatever another test (or the CLI) configured;
    and leaves the standard library's logging as it found it (worker.log's handler removed)."""
    structlog.reset_defaults()
    root = logging.getLogger()
    level = root.level
    yield
    structlog.reset_defaults()
    for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


#: The secrets rules/examples.yaml references, as a deployment's environment would hold them.
EXAMPLE_SECRETS = {
    "SMTP_PASSWORD": "example-smtp-password",
    "MODEL_FUNCTION_KEY": "example-function-key",
    "GITHUB_TOKEN": "example-github-token",
    "AUDIT_EVENTHUB_CONNECTION_STRING": (
        "Endpoint=sb://audit.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=example-key"
    ),
}


@pytest.fixture(autouse=True)
def example_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the shipped example rules need, so every test can load them."""
    for name, value in EXAMPLE_SECRETS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def http_target() -> AsyncIterator[HttpTarget]:
    """An aiohttp server standing in for an HTTP action's target; it records every request."""
    target = HttpTarget()
    await target.start()
    yield target
    await target.stop()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, for the TLS of the test servers."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def sdk_garbage() -> Iterator[None]:
    """Collect the garbage a test leaves, at its own teardown, ignoring unclosed-socket warnings.

    The azure-eventhub SDK leaves the sockets of some refused or abandoned connections (a hub that
    drops them, say) to the garbage collector. Collected later, or by an automatic collection in the
    middle of the test, their ResourceWarning would land on whichever test runs then, or fail this
    one; so the automatic collections wait, and the garbage is collected here, where it is attributed
    to (and forgiven for) the test that drove the SDK. A connection's stream writer that the SDK drops
    unclosed warns at once, in the middle of the test: forgiven too.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "unclosed <StreamWriter", ResourceWarning)
            yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        if enabled:
            gc.enable()


@pytest.fixture
def probe() -> Iterator[Probe]:
    """The probe that the probe action type of this test reports to (see tests/probe.py)."""
    ACTIVE.append(Probe())
    yield ACTIVE[-1]
    ACTIVE.pop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest first, so that pytest-xdist's workers finish together: azure-eventhub's own live
    tests (minutes), then the integration tests (they wait on servers and processes), then the pure
    ones, which fill the gaps at the end. Within each kind, the collection's order."""
    items.sort(key=lambda item: (item.get_closest_marker("sdk_livetests") is None, _pure(item)))


def _pure(item: pytest.Item) -> bool:
    return item.get_closest_marker("integration") is None


#: What the azure-eventhub SDK's own live tests came to, when they ran, for the session's summary.
_sdk_summary: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collects the summary the live tests' test records as a property: in this process, or sent here
    by the pytest-xdist worker that ran it."""
    for name, value in report.user_properties:
        if name == SUMMARY and isinstance(value, list):
            _sdk_summary[:] = [str(line) for line in value]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What the azure-eventhub SDK's own live tests came to, when they ran (tests/test_sdk_livetests.py)."""
    if _sdk_summary:
        terminalreporter.section("azure-eventhub's own live tests")
        for line in _sdk_summary:
            terminalreporter.write_line(line)
