"""``worker run``: the live worker's lifetime, from settings to a clean exit.

Loads the rules, opens the checkpoint stores, serves health and metrics, and runs the receiver
until SIGTERM or SIGINT (or, with ``idle_exit``, until the hub has been quiet and everything is
finished). SIGHUP, or a change to a rules file (a Kubernetes ConfigMap update), reloads the rules:
an invalid table is rejected, its errors logged, and the old one kept. The pipelines run in a child
process (:class:`~worker.childprocess.ChildProcessHost`), or with ``pipeline_process`` off in this one
(:class:`~worker.inprocess.InProcessHost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from azure.identity.aio import DefaultAzureCredential

from worker.accounting import Tally
from worker.checkpoints import open_stores
from worker.childprocess import ChildProcessHost
from worker.config import RunSettings
from worker.handoff import PartitionHost
from worker.inprocess import in_process_host, rules_loader
from worker.metrics import ActionMetrics, new_registry
from worker.ops import serve
from worker.receiver import HubReceiver, client_for
from worker.rulesfile import paths_of

log = structlog.get_logger("worker.run")


async def run_worker(settings: RunSettings, stop: asyncio.Event | None = None) -> Tally:
    """Run until ``stop`` is set (or a signal, or idle); return the counts of the run."""
    table = rules_loader(settings.rules)()  # checked here, before anything starts
    stop = stop or asyncio.Event()
    hub, processing = settings.hub(), settings.processing()
    async with contextlib.AsyncExitStack() as stack:
        credential = None
        if hub.connection_string is None:
            credential = await stack.enter_async_context(DefaultAzureCredential())
        stores = await stack.enter_async_context(open_stores(processing.checkpoints, processing.scope))
        metrics = ActionMetrics()
        host: PartitionHost
        if settings.pipeline_process:
            host = await stack.enter_async_context(ChildProcessHost.start(processing, metrics))
        else:
            host = await stack.enter_async_context(in_process_host(processing, stores, metrics))
        receiver = HubReceiver(client_for(hub, stores.checkpoints, credential), hub, host, settings.shutdown_grace)
        registry = new_registry(receiver, metrics)

        def readiness() -> str | None:
            return None if receiver.connected else "the Event Hub has not answered"

        port = await stack.enter_async_context(serve(settings.ops(), registry, readiness))
        _on_signals(stop, receiver.reload)
        stack.callback(_off_signals)
        log.info("worker.started", rules=len(table.rules), http_port=port, checkpoints=repr(processing.checkpoints))
        _tell_where_dead_letters_go(settings.dead_letters)
        helpers = []
        if settings.idle_exit:
            helpers.append(asyncio.create_task(_stop_when_idle(receiver, settings.idle_exit, stop)))
        if settings.rules_watch:
            helpers.append(asyncio.create_task(_watch_rules(settings, receiver)))
        # What was built so far lives as long as the process: left out of the collector's full
        # passes, which would otherwise walk it again and again under load.
        gc.freeze()
        try:
            await receiver.run(stop)
        finally:
            for helper in helpers:
                helper.cancel()
    tally = receiver.tally()
    log.info("worker.stopped", events=tally.read, **{fate.value: n for fate, n in tally.fates.items()})
    return tally


def _tell_where_dead_letters_go(lane: str) -> None:
    """A dead letter counts as finished: in a local directory, it lasts as long as that directory."""
    if "://" in lane:
        return
    directory = str(Path(lane).resolve())
    if os.environ.get("KUBERNETES_SERVICE_HOST") or Path("/.dockerenv").exists():
        log.warning(
            "dead_letters.local",
            directory=directory,
            advice="in a container, this must be a persistent volume, or dead letters die with the container: "
            "prefer a blob container (WORKER_DEAD_LETTERS=https://ACCOUNT.blob.core.windows.net/CONTAINER)",
        )
    else:
        log.info("dead_letters.local", directory=directory)


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


async def _watch_rules(settings: RunSettings, receiver: HubReceiver) -> None:
    seen = await asyncio.to_thread(_fingerprint, settings)
    while True:
        await asyncio.sleep(settings.rules_watch)
        now = await asyncio.to_thread(_fingerprint, settings)
        if now != seen:
            seen = now
            log.info("rules.changed")
            receiver.reload()


async def _stop_when_idle(receiver: HubReceiver, seconds: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(min(seconds / 4, 1.0))
        if receiver.idle and time.monotonic() - receiver.last_activity >= seconds:
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
