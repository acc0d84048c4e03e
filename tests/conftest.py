"""Fixtures shared by the test modules: real servers, started once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import structlog

from tests.servers import Azurite, HubServer, ServerError, start_azurite, start_localhub, stop

Server = TypeVar("Server", Azurite, HubServer)


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
    """Each test starts from structlog's defaults, whatever another test (or the CLI) configured."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
