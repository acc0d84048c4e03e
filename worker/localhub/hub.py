"""``LocalHub``: the local Event Hubs-compatible hub as an async context manager.

    async with LocalHub([HubSpec("ml-events", partitions=4)]) as hub:
        client = EventHubProducerClient.from_connection_string(hub.connection_string())

A development and test tool, not a product: no TLS, no persistence, retention bounded in memory.
Tokens are checked as the service checks them, against ``keys`` (by default one public development
key, :data:`~worker.localhub.authorization.DEVELOPMENT_KEY`, which the connection string carries).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

import structlog

from worker.localhub.authorization import DEVELOPMENT_KEY, DEVELOPMENT_KEY_NAME, DEVELOPMENT_KEYS
from worker.localhub.server import HubState, serve_connection
from worker.localhub.store import HubSpec, Retention

log = structlog.get_logger("worker.localhub")


class LocalHub:
    """A local hub serving ``hubs`` on ``host:port`` (port 0: any free port) while the context lasts.

    ``keys`` (key name -> key) are the shared access keys tokens must be signed with; the first is the
    one :meth:`connection_string` names.
    """

    def __init__(
        self,
        hubs: Sequence[HubSpec],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        retention: Retention | None = None,
        keys: Mapping[str, str] = DEVELOPMENT_KEYS,
    ) -> None:
        if not hubs:
            raise ValueError("a local hub needs at least one event hub")
        if not keys or not all(keys) or not all(keys.values()):
            raise ValueError("a local hub needs at least one shared access key, each with a name and a value")
        self.hubs = tuple(hubs)
        self.host = host
        self.port = port
        self.state = HubState.create(list(self.hubs), retention or Retention(), keys=keys)
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            lambda reader, writer: serve_connection(self.state, reader, writer), self.host, self.port
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("localhub.started", host=self.host, port=self.port, hubs=[h.name for h in self.hubs])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self.drop_connections()
        if self.state.tasks:
            await asyncio.wait(list(self.state.tasks), timeout=5)
        await self._server.wait_closed()
        self._server = None

    def connection_string(self, hub: str | None = None) -> str:
        """The connection string for the SDK (the first hub unless ``hub`` is named)."""
        name = hub or self.hubs[0].name
        key_name, key = next(iter(self.state.keys.items()))
        return connection_string(self.host, self.port, name, key_name=key_name, key=key)

    def drop_connections(self) -> None:
        """Cut every client connection at once, as a network failure would (the SDK reconnects)."""
        for connection in list(self.state.connections):
            connection.abort()

    def detach_receivers(self, condition: str = "amqp:link:detach-forced") -> None:
        """Detach every consumer link with ``condition`` (the SDK re-attaches after a retriable one)."""
        for connection in list(self.state.connections):
            connection.detach_receivers(condition)

    def stick(self, hub: str, partition: str, *, stuck: bool = True) -> None:
        """Make ``partition``'s consumer links stop delivering while staying open (``stuck=False``
        ends it): the silent receiver long-running consumers meet, for testing their recovery."""
        key = (hub.casefold(), partition)
        if stuck:
            self.state.stuck.add(key)
            return
        self.state.stuck.discard(key)
        for connection in list(self.state.connections):
            connection.wake()


def connection_string(
    host: str, port: int, hub: str, *, key_name: str = DEVELOPMENT_KEY_NAME, key: str = DEVELOPMENT_KEY
) -> str:
    """An Event Hubs connection string for a local hub (the SDK skips TLS for the development emulator)."""
    return (
        f"Endpoint=sb://{host}:{port};SharedAccessKeyName={key_name};SharedAccessKey={key};"
        f"EntityPath={hub};UseDevelopmentEmulator=true"
    )
