"""Fixtures shared by the test modules: real servers, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from tests.servers import Azurite, ServerError, start_azurite, stop


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
