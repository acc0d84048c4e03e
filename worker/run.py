"""``worker run``: the live worker's lifetime, from settings to a clean exit.

Loads the rules, opens the checkpoint stores, serves health and metrics, and runs the consumer
until SIGTERM or SIGINT (or, with ``idle_exit``, until the hub has been quiet and everything is
finished). SIGHUP, or a change to a rules file (a Kubernetes ConfigMap update), reloads the rules:
an invalid table is rejected, its errors logged, and the old one kept. The pipelines run in a child
process (:mod:`worker.engine`), or with ``pipeline_process`` off in this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Callable

import structlog
from azure.identity.aio import DefaultAzureCredential

from worker.accounting import Tally
from worker.checkpoints import Scope, open_stores
from worker.config import RunSettings
from worker.consumer import HubConsumer, client_for, namespace_of
from worker.engine import EngineClient
from worker.metrics import ActionMetrics, new_registry
from worker.ops import serve
from worker.partitions import PartitionHost, local_partitions, rules_loader
from worker.rules import RulesTable
from worker.rulesfile import paths_of

log = structlog.get_logger("worker.run")


def load_table(settings: RunSettings) -> RulesTable:
    """The rules table the settings name. Raises RulesError listing every problem."""
    return rules_loader(settings)()


async def run_worker(settings: RunSettings, stop: asyncio.Event | None = None) -> Tally:
    """Run until ``stop`` is set (or a signal, or idle); return the counts of the run."""
    table = load_table(settings)  # checked here, before anything starts
    stop = stop or asyncio.Event()
    hub = settings.hub()
    scope = Scope(namespace_of(hub), hub.eventhub, hub.consumer_group)
    async with contextlib.AsyncExitStack() as stack:
        credential = None
        if hub.connection_string is None:
            credential = await stack.enter_async_context(DefaultAzureCredential())
        checkpoints = settings.checkpoints()
        stores = await stack.enter_async_context(open_stores(checkpoints, scope))
        metrics = ActionMetrics()
        host: PartitionHost
        if settings.pipeline_process:
            host = await stack.enter_async_context(EngineClient.start(settings, scope, metrics))
        else:
            host = await stack.enter_async_context(local_partitions(settings, stores, scope, metrics))
        consumer = HubConsumer(client_for(hub, stores, credential), hub, host, settings.shutdown_grace)
        registry = new_registry(consumer, metrics)

        def readiness() -> str | None:
            return None if consumer.connected else "the Event Hub has not answered"

        port = await stack.enter_async_context(serve(settings.ops(), registry, readiness))
        _on_signals(stop, consumer.reload)
        stack.callback(_off_signals)
        log.info("worker.started", rules=len(table.rules), http_port=port, checkpoints=repr(checkpoints))
        helpers = []
        if settings.idle_exit:
            helpers.append(asyncio.create_task(_stop_when_idle(consumer, settings.idle_exit, stop)))
        if settings.rules_watch:
            helpers.append(asyncio.create_task(_watch_rules(settings, consumer)))
        # What was built so far lives as long as the process: left out of the collector's full
        # passes, which would otherwise walk it again and again under load.
        gc.freeze()
        try:
            await consumer.run(stop)
        finally:
            for helper in helpers:
                helper.cancel()
    tally = consumer.tally()
    log.info("worker.stopped", events=tally.read, **{fate.value: n for fate, n in tally.fates.items()})
    return tally


def _fingerprint(settings: RunSettings) -> tuple[tuple[str, int, int], ...]:
    """What changes when a rules file is edited, added or removed (a ConfigMap swaps a symlink)."""
    out = []
    for path in paths_of(settings.rules):
        try:
            stat = path.stat()
        except OSError:
            out.append((str(path), -1, -1))
            continue
        out.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(out)


async def _watch_rules(settings: RunSettings, consumer: HubConsumer) -> None:
    seen = await asyncio.to_thread(_fingerprint, settings)
    while True:
        await asyncio.sleep(settings.rules_watch)
        now = await asyncio.to_thread(_fingerprint, settings)
        if now != seen:
            seen = now
            log.info("rules.changed")
            consumer.reload()


async def _stop_when_idle(consumer: HubConsumer, seconds: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(min(seconds / 4, 1.0))
        if consumer.idle and time.monotonic() - consumer.last_activity >= seconds:
            log.info("worker.idle", seconds=seconds)
            stop.set()


_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _on_signals(stop: asyncio.Event, reload: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()

    def stopping(name: str) -> None:
        log.info("worker.stopping", signal=name)
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, stopping, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, stopping, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, reload)


def _off_signals() -> None:
    loop = asyncio.get_running_loop()
    for number in _SIGNALS:
        loop.remove_signal_handler(number)
