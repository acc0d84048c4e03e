"""The pipeline process, the child's end: ``python -m worker.live.child FD``, started by ``worker run``.

It reads :class:`~worker.live.handoff.Start` and then the parent's :data:`~worker.live.handoff.Command`
records from the socket ``FD``, carries them out on an :class:`~worker.live.inprocess.InProcessHost`
(which writes the checkpoints and pipeline state), and answers with
:data:`~worker.live.handoff.Reply` records: what each partition took in, and every quarter second (and
whenever a partition closes) a report of its partitions, counts and action metrics.

The child ignores signals: the parent decides when to stop. If the parent dies, the child exits at
once without writing anything, as if killed with it: a new owner redoes what was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import assert_never

import structlog

from worker.checkpoints.store import open_stores
from worker.errors import PartitionFailed, WorkerError
from worker.live.handoff import (
    Close,
    Closed,
    Fatal,
    Open,
    Put,
    Ready,
    Reload,
    Reply,
    Report,
    Stop,
    Taken,
    frame,
    read_command,
    read_start,
)
from worker.live.inprocess import InProcessHost, in_process_host
from worker.live.metrics import ActionMetrics
from worker.log import configure as configure_logging
from worker.log import log_loop_exception
from worker.masking import MASKER
from worker.telemetry.start import start_tracing

log = structlog.get_logger("worker.child")

#: Seconds between the child's reports.
REPORT_PERIOD = 0.25


async def serve(sock: socket.socket) -> int:
    """Run the pipelines the parent at the other end of ``sock`` asks for; the exit code."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    settings = (await read_start(reader)).settings
    if settings.checkpoints.connection_string is not None:
        MASKER.add_connection_string(settings.checkpoints.connection_string)
    configure_logging(settings.log_level, settings.log_format, settings.library_log_level)
    asyncio.get_running_loop().set_exception_handler(log_loop_exception)

    def send(reply: Reply) -> None:
        writer.write(frame(reply))

    metrics = ActionMetrics()
    try:
        async with contextlib.AsyncExitStack() as stack:
            tracer = start_tracing(os.environ, settings.scope, role="pipeline")
            stack.callback(tracer.close)  # what is buffered is sent before the process ends
            stores = await stack.enter_async_context(open_stores(settings.checkpoints, settings.scope))
            host = await stack.enter_async_context(
                in_process_host(settings, stores, metrics, on_taken=lambda p, n: send(Taken(p, n)), tracer=tracer)
            )

            def report() -> None:
                send(Report(tuple(host.statuses()), host.tally(), metrics.counts()))

            gc.freeze()  # as in run_worker
            send(Ready())
            reporting = asyncio.create_task(_report_every(REPORT_PERIOD, report))
            stack.callback(reporting.cancel)
            if not await _obey(reader, writer, host, report):
                log.error("child.orphaned")  # the parent is gone: exit as if killed with it
                sys.stderr.flush()
                os._exit(1)
    except WorkerError as exc:
        send(Fatal(str(exc)))
        await writer.drain()
        writer.close()
        return 1
    report()  # the runner is closed: every count is final
    await writer.drain()
    writer.close()
    return 0


async def _report_every(seconds: float, report: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(seconds)
        report()


async def _obey(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: InProcessHost, report: Callable[[], None]
) -> bool:
    """Carry out the parent's commands until it says stop (True) or goes away (False)."""
    closing: set[asyncio.Task[None]] = set()

    async def close(partition_id: str, grace: float, write: bool) -> None:
        await host.close(partition_id, grace, write=write)
        report()
        writer.write(frame(Closed(partition_id)))

    while True:
        try:
            command = await read_command(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        match command:
            case Put(partition_id, deliveries):
                with contextlib.suppress(PartitionFailed):  # reported with the partition's status
                    host.offer(partition_id, deliveries)
            case Open(partition_id):
                await host.open(partition_id)
            case Close(partition_id, grace, write):
                task = asyncio.create_task(close(partition_id, grace, write))
                closing.add(task)
                task.add_done_callback(closing.discard)
            case Reload():
                host.reload()
            case Stop():
                break
            case _:
                assert_never(command)
        await writer.drain()
    for task in list(closing):
        await task
    for status in host.statuses():
        await host.close(status.partition_id, 0, write=False)
    return True


def main(argv: list[str]) -> int:
    """``python -m worker.live.child FD``: started by :meth:`~worker.live.childprocess.ChildProcessHost.start`,
    never by hand."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)  # a terminal's ^C reaches the whole group: the parent decides
    configure_logging()  # until the parent's settings arrive
    sock = socket.socket(fileno=int(argv[1]))
    try:
        return asyncio.run(serve(sock))
    except Exception as exc:
        log.exception("child.failed", kind="unexpected", error=repr(exc))  # the parent sees the exit code
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
