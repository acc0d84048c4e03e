"""``worker run``: the live worker's lifetime, from settings to a clean exit.

Loads the rules, opens the checkpoint stores, serves health and metrics, and runs the receiver
until SIGTERM or SIGINT (or, with ``idle_exit``, until the hub has been quiet and everything is
finished). SIGHUP, or a change to a rules file (a Kubernetes ConfigMap update), reloads the rules:
an invalid table is rejected, its errors logged, and the old one kept. The pipelines run in a child
process (:class:`~worker.live.childprocess.ChildProcessHost`), or with ``pipeline_process`` off in this one
(:class:`~worker.live.inprocess.InProcessHost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog
from azure.identity.aio import DefaultAzureCredential

from worker.checkpoints.marks import ConsumerGroupUse, refusal
from worker.checkpoints.store import Stores, mark_consumer_group, open_stores
from worker.config import RunSettings
from worker.core.accounting import Tally
from worker.errors import SettingsError
from worker.live.childprocess import ChildProcessHost
from worker.live.claims import SettlingStore
from worker.live.handoff import PartitionHost
from worker.live.health import serve
from worker.live.inprocess import in_process_host, rules_loader
from worker.live.metrics import ActionMetrics, new_registry
from worker.live.receiver import HubReceiver, client_for
from worker.log import log_loop_exception
from worker.rulefiles.directories import RulesWatch, fingerprint
from worker.settings import Scope
from worker.telemetry.start import start_tracing

log = structlog.get_logger("worker.run")


async def run_worker(settings: RunSettings, stop: asyncio.Event | None = None) -> Tally:
    """Run until ``stop`` is set (or a signal, or idle); return the counts of the run."""
    asyncio.get_running_loop().set_exception_handler(log_loop_exception)
    table = rules_loader(settings.rules, dry_run=settings.dry_run)()  # checked here, before anything starts
    stop = stop or asyncio.Event()
    hub, processing = settings.hub(), settings.processing()
    async with contextlib.AsyncExitStack() as stack:
        # This process's spans: the Azure SDK's (receiving, ownership, checkpoints), and the
        # pipeline's when it runs here. The pipeline process starts its own from the same variables.
        tracer = start_tracing(os.environ, processing.scope, role="worker")
        stack.callback(tracer.close)
        credential = None
        if hub.connection_string is None:
            credential = await stack.enter_async_context(DefaultAzureCredential())
        stores = await stack.enter_async_context(open_stores(processing.checkpoints, processing.scope))
        await _claim_group(stores, processing.scope, dry_run=settings.dry_run)
        metrics = ActionMetrics()
        host: PartitionHost
        if settings.pipeline_process:
            host = await stack.enter_async_context(ChildProcessHost.start(processing, metrics))
        else:
            host = await stack.enter_async_context(in_process_host(processing, stores, metrics, tracer=tracer))
        claims = SettlingStore(stores.checkpoints, settle=hub.settle, expiry=hub.expiry, roster=stores.roster)
        receiver = HubReceiver(
            client_for(hub, claims, credential),
            hub,
            host,
            settings.shutdown_grace,
            store=stores.checkpoints,
            claims=claims,
        )

        def readiness() -> str | None:
            return None if receiver.connected else "the Event Hub has not answered"

        pid = host.pid if isinstance(host, ChildProcessHost) else None
        registry = new_registry(
            receiver, metrics, readiness=readiness, pipeline_pid=None if pid is None else lambda: pid
        )

        port = await stack.enter_async_context(serve(settings.ops(), registry, readiness))
        _on_signals(stop, receiver.reload)
        stack.callback(_off_signals)
        log.info(
            "worker.started",
            rules=len(table.rules),
            http_port=port,
            checkpoints=repr(processing.checkpoints),
            dry_run=settings.dry_run,
        )
        if not settings.dry_run:
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
            await claims.leave()  # its partitions released: its peers no longer count it
    tally = receiver.tally()
    log.info("worker.stopped", events=tally.read, **{fate.value: n for fate, n in tally.fates.items()})
    return tally


async def _claim_group(stores: Stores, scope: Scope, *, dry_run: bool) -> None:
    """Mark the consumer group for what this worker is, or refuse to share it with the other kind."""
    use = ConsumerGroupUse.SHADOW if dry_run else ConsumerGroupUse.ACTING
    mark = await mark_consumer_group(stores, scope, use, datetime.now(UTC).isoformat(timespec="seconds"))
    problem = refusal(use, mark, scope.consumer_group)
    if problem is not None:
        raise SettingsError([problem])
    log.info("consumer_group.marked", consumer_group=scope.consumer_group, use=mark.use.value, since=mark.since)


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


async def _watch_rules(settings: RunSettings, receiver: HubReceiver) -> None:
    """Reload when what the rules files hold changes: an edit, a file added or removed, or a
    ConfigMap update, which swaps the directory behind the same paths (see :mod:`worker.rulefiles.directories`)."""
    watch = RulesWatch(await asyncio.to_thread(fingerprint, settings.rules))
    while True:
        await asyncio.sleep(settings.rules_watch)
        if watch.changed(await asyncio.to_thread(fingerprint, settings.rules)):
            log.info("rules.changed")
            receiver.reload()


async def _stop_when_idle(receiver: HubReceiver, seconds: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(min(seconds / 4, 1.0))
        if time.monotonic() - receiver.last_activity >= seconds and await receiver.settled():
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
