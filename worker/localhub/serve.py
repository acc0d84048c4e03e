"""``python -m worker localhub``: run a local hub until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from typing import TextIO

from worker.localhub.authorization import DEVELOPMENT_KEY, DEVELOPMENT_KEY_NAME
from worker.localhub.hub import LocalHub
from worker.localhub.store import HubSpec, Retention


@dataclass(frozen=True, slots=True)
class HubSettings:
    host: str = "127.0.0.1"
    port: int = 5672
    eventhub: str = "ml-events"
    partitions: int = 4
    consumer_groups: tuple[str, ...] = ("$Default",)
    retention_events: int = 100_000
    retention_bytes: int = 64 * 1024 * 1024
    #: The one shared access key tokens are checked against (by default the public development key).
    key_name: str = DEVELOPMENT_KEY_NAME
    key: str = DEVELOPMENT_KEY


async def serve(settings: HubSettings, out: TextIO) -> None:
    """Serve until a signal asks to stop; print the connection string once listening."""
    spec = HubSpec(settings.eventhub, settings.partitions, tuple(dict.fromkeys(settings.consumer_groups)))
    retention = Retention(settings.retention_events, settings.retention_bytes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    keys = {settings.key_name: settings.key}
    async with LocalHub([spec], host=settings.host, port=settings.port, retention=retention, keys=keys) as hub:
        print(hub.connection_string(), file=out, flush=True)
        await stop.wait()
