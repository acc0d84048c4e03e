"""A start gate for workers started together: a pass-through in front of the storage bed that holds each
worker's first balancing round until every worker has come to it, then lets one worker's round through,
and the others' once that one has claimed every partition.

A worker's first round begins with listing the ownership records. Before it, a process imports the
SDK, starts its pipeline process and connects: seconds that differ between processes by more than a
settle when the machine is busy. The gate takes that out, so that the rounds come as the rounds of
replicas started at once on an idle cluster do: one first, claiming every partition, and its peers a
moment later, each stealing its share.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from tests.servers import Azurite, free_port
from tests.storage_bed import pass_on


class StartGate:
    """Holds the ownership listings of ``workers`` workers; see the module's docstring."""

    def __init__(self, upstream: str, workers: int, partitions: int) -> None:
        self._upstream = upstream
        self._workers = workers
        self._partitions = partitions
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=300))
        self._arrived = 0
        self._everyone = asyncio.Event()
        self._first_round = asyncio.Event()
        self._claimed: set[str] = set()

    @property
    def opened(self) -> bool:
        """Whether every worker came to the gate, and the first one's round went through."""
        return self._everyone.is_set() and self._first_round.is_set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if _lists_ownership(request) and not self.opened:
            if self._everyone.is_set():  # the first worker's next round: its claims are written
                self._first_round.set()
            else:
                turn = self._arrived
                self._arrived += 1
                if self._arrived == self._workers:
                    self._everyone.set()
                await self._everyone.wait()
                if turn:
                    await self._first_round.wait()
        answer = await pass_on(self._session, self._upstream, request, body)
        if _claims(request) and answer.status < 300 and self._everyone.is_set():
            self._claimed.add(request.path)
            if len(self._claimed) >= self._partitions:
                self._first_round.set()
        return answer

    async def close(self) -> None:
        await self._session.close()


def _lists_ownership(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.query.get("comp") == "list"
        and "/ownership/" in request.query.get("prefix", "")
    )


def _claims(request: web.Request) -> bool:
    return request.method == "PUT" and "/ownership/" in request.path and "x-ms-meta-ownerid" in request.headers


@asynccontextmanager
async def start_gate(azurite: Azurite, *, workers: int, partitions: int) -> AsyncIterator[tuple[StartGate, Azurite]]:
    """A gate in front of ``azurite`` for ``workers`` workers on ``partitions`` partitions, and the
    storage to give the workers (the same account, through the gate)."""
    gate = StartGate(f"http://127.0.0.1:{azurite.port}", workers, partitions)
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", gate.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield gate, dataclasses.replace(azurite, port=port)
    finally:
        await runner.cleanup()
        await gate.close()
