"""Fixtures shared by the test modules: real servers, started once per session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from tests.servers import Azurite, ServerError, start_azurite, stop
from tests.targets import Certificate, HttpTarget, make_certificate


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite's blob service on a free loopback port, with its data in a temporary directory.

    Azurite is part of the test bed (``make test`` installs it): when it is missing, the tests that
    use it fail, saying how to install it.
    """
    try:
        server = start_azurite(tmp_path_factory.mktemp("azurite"))
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    stop(server)


@pytest.fixture(autouse=True)
def default_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults, whatever another test (or the CLI) configured."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


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
