"""The pipeline process: the owned partitions' pipelines and actions, in a child of ``worker run``.

Receiving (the SDK's AMQP decoding) and processing (decoding the events, the rules, the actions)
each take a core this way. The parent keeps the Event Hubs client and partition ownership, and
drives the child through :class:`EngineClient`, a :class:`~worker.partitions.PartitionHost`: it
sends each partition's batches and commands over a socket pair; the child runs them in a
:class:`~worker.partitions.LocalPartitions` and writes the checkpoints and pipeline state itself.

Frames are length-prefixed pickles (the two ends are the same program). Each partition may have
``inbox`` messages sent and not yet taken in by its pipeline: the child reports what it takes, and
the parent's ``put`` waits for room, which is the back-pressure on the receiver. The child reports
its partitions, counts and action metrics every quarter second and whenever a partition closes.

The child ignores signals: the parent decides when to stop. If the parent dies, the child exits at
once without writing anything, as if killed with it: a new owner redoes what was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import pickle
import signal
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from worker.accounting import Tally
from worker.checkpoints import Scope, open_stores
from worker.config import RunSettings
from worker.errors import WorkerError
from worker.log import configure as configure_logging
from worker.metrics import ActionCounts, ActionMetrics
from worker.partition import PartitionFailed, PartitionStatus
from worker.partitions import LocalPartitions, Received, local_partitions

log = structlog.get_logger("worker.engine")

_HEAD = struct.Struct("<I")
#: Seconds between the child's reports.
REPORT_PERIOD = 0.25
#: Seconds the child gets to exit after being told to stop (its partitions are closed by then).
STOP_TIMEOUT = 30.0


class EngineFailed(WorkerError):
    """The pipeline process stopped, or could not start."""


def _frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEAD.pack(len(data)) + data


async def _read(reader: asyncio.StreamReader) -> Any:
    (size,) = _HEAD.unpack(await reader.readexactly(_HEAD.size))
    return pickle.loads(await reader.readexactly(size))  # noqa: S301 - our own child, over a private socket pair


@dataclass(frozen=True, slots=True)
class _Report:
    statuses: list[PartitionStatus]
    tally: Tally
    actions: ActionCounts


# --- the parent's end ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Sent:
    """One open partition, as the parent sees it."""

    room: asyncio.Event = field(default_factory=asyncio.Event)
    #: Messages sent, and taken in by the pipeline, since the partition was opened.
    sent: int = 0
    taken: int = 0
    failed: bool = False


class EngineClient:
    """:class:`~worker.partitions.PartitionHost` in the pipeline process; start it with :meth:`start`."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        metrics: ActionMetrics,
        inbox: int,
    ) -> None:
        self._process = process
        self._reader = reader
        self._writer = writer
        self._metrics = metrics
        self._inbox = max(inbox, 1)
        self._open: dict[str, _Sent] = {}
        self._closing: dict[str, asyncio.Future[None]] = {}
        self._statuses: dict[str, tuple[PartitionStatus, float]] = {}
        self._tally = Tally()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._error: str | None = None
        self._stopping = False

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, settings: RunSettings, scope: Scope, metrics: ActionMetrics) -> AsyncIterator[EngineClient]:
        """Start the pipeline process for ``settings`` and the checkpoints of ``scope``; on leaving, stop
        it (its partitions closed first)."""
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "worker.engine",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        client = cls(process, reader, writer, metrics, settings.drive().inbox)
        writer.write(_frame((settings, scope)))
        reading = asyncio.create_task(client._receive(), name="engine")
        try:
            await client._ready
            log.info("engine.started", pid=process.pid)
            yield client
        finally:
            await client._stop()
            await reading

    # --- PartitionHost -------------------------------------------------------------------------

    async def open(self, partition_id: str) -> None:
        if partition_id in self._open:
            await self.close(partition_id, 0, write=False)
        self._open[partition_id] = _Sent()
        self._send(("open", partition_id))

    async def put(self, partition_id: str, events: list[Received]) -> None:
        sent = self._open.get(partition_id)
        if sent is None or sent.failed:
            raise PartitionFailed(f"partition {partition_id}: its pipeline has stopped")
        self._send(("put", partition_id, events))
        await self._writer.drain()
        sent.sent += len(events)
        while sent.sent - sent.taken >= self._inbox and not sent.failed:
            sent.room.clear()
            await sent.room.wait()
        if sent.failed:
            raise PartitionFailed(f"partition {partition_id}: its pipeline has stopped")

    async def close(self, partition_id: str, grace: float, *, write: bool) -> None:
        if self._open.pop(partition_id, None) is None or self._ended.done():
            return  # nothing to close: never opened, or the process has gone (failure() says so)
        closed = self._closing[partition_id] = asyncio.get_running_loop().create_future()
        self._send(("close", partition_id, grace, write))
        try:
            await closed
        finally:
            self._closing.pop(partition_id, None)
            self._statuses.pop(partition_id, None)

    def reload(self) -> None:
        with contextlib.suppress(EngineFailed):  # the failure surfaces through failure()
            self._send(("reload",))

    def tally(self) -> Tally:
        return self._tally

    def statuses(self) -> list[PartitionStatus]:
        now = time.monotonic()
        out = []
        for partition_id in self._open:
            found = self._statuses.get(partition_id)
            if found is not None:
                status, at = found
                out.append(_aged(status, now - at))
        return out

    async def failure(self) -> None:
        await asyncio.shield(self._ended)
        if not self._stopping:
            raise EngineFailed(self._error or f"the pipeline process exited (code {self._process.returncode})")

    # --- the wire ------------------------------------------------------------------------------

    def _send(self, message: object) -> None:
        if self._ended.done():
            raise EngineFailed(self._error or "the pipeline process has exited")
        self._writer.write(_frame(message))

    async def _receive(self) -> None:
        try:
            while True:
                message = await _read(self._reader)
                self._handle(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the child has closed its end: it is exiting
        except Exception as exc:  # a frame that cannot be read: nothing more can be trusted
            self._error = f"a message of the pipeline process could not be read: {exc!r}"
            self._process.kill()
            raise
        finally:
            code = await self._process.wait()
            if not self._stopping:
                self._error = self._error or f"the pipeline process exited (code {code})"
                log.error("engine.exited", code=code, error=self._error)
            error = EngineFailed(self._error or "the pipeline process has exited")
            for sent in self._open.values():
                sent.failed = True
                sent.room.set()
            for closed in self._closing.values():
                if not closed.done():
                    closed.set_exception(error)
            if not self._ready.done():
                self._ready.set_exception(error)
            self._ended.set_result(None)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "taken":
            _, partition_id, count = message
            sent = self._open.get(partition_id)
            if sent is not None:
                sent.taken += count
                sent.room.set()
        elif kind == "report":
            report: _Report = message[1]
            now = time.monotonic()
            self._statuses = {status.partition_id: (status, now) for status in report.statuses}
            self._tally = report.tally
            self._metrics.load(report.actions)
            for status in report.statuses:
                sent = self._open.get(status.partition_id)
                if status.failed and sent is not None:
                    sent.failed = True
                    sent.room.set()
        elif kind == "closed":
            closed = self._closing.get(message[1])
            if closed is not None and not closed.done():
                closed.set_result(None)
        elif kind == "ready":
            self._ready.set_result(None)
        elif kind == "error":
            self._error = message[1]

    async def _stop(self) -> None:
        self._stopping = True
        if not self._ended.done():
            with contextlib.suppress(ConnectionError):
                self._writer.write(_frame(("stop",)))
                await self._writer.drain()
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await asyncio.shield(self._ended)
            except TimeoutError:
                log.error("engine.stop_timeout", seconds=STOP_TIMEOUT)  # noqa: TRY400 - no traceback to show
                self._process.kill()
        self._writer.close()


def _aged(status: PartitionStatus, seconds: float) -> PartitionStatus:
    """``status`` as of ``seconds`` after its report."""
    return replace(status, checkpoint_age=status.checkpoint_age + seconds)


# --- the child's end -----------------------------------------------------------------------------


async def serve(sock: socket.socket) -> int:
    """Run the pipelines the parent at the other end of ``sock`` asks for; the exit code."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    settings: RunSettings
    scope: Scope
    settings, scope = await _read(reader)
    configure_logging(settings.log_level, settings.log_format)

    def send(message: object) -> None:
        writer.write(_frame(message))

    metrics = ActionMetrics()
    try:
        async with contextlib.AsyncExitStack() as stack:
            stores = await stack.enter_async_context(open_stores(settings.checkpoints(), scope))
            host = await stack.enter_async_context(
                local_partitions(settings, stores, scope, metrics, on_taken=lambda p, n: send(("taken", p, n)))
            )

            def report() -> None:
                send(("report", _Report(host.statuses(), host.tally(), metrics.counts())))

            gc.freeze()  # as in run_worker
            send(("ready",))
            reporting = asyncio.create_task(_report_every(REPORT_PERIOD, report))
            stack.callback(reporting.cancel)
            if not await _obey(reader, writer, host, report):
                log.error("engine.orphaned")  # the parent is gone: exit as if killed with it
                sys.stderr.flush()
                os._exit(1)
    except WorkerError as exc:
        send(("error", str(exc)))
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
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: LocalPartitions, report: Callable[[], None]
) -> bool:
    """Carry out the parent's commands until it says stop (True) or goes away (False)."""
    closing: set[asyncio.Task[None]] = set()

    async def close(partition_id: str, grace: float, write: bool) -> None:
        await host.close(partition_id, grace, write=write)
        report()
        writer.write(_frame(("closed", partition_id)))

    while True:
        try:
            message = await _read(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        kind = message[0]
        if kind == "put":
            with contextlib.suppress(PartitionFailed):  # reported with the partition's status
                host.offer(message[1], message[2])
        elif kind == "open":
            await host.open(message[1])
        elif kind == "close":
            task = asyncio.create_task(close(*message[1:]))
            closing.add(task)
            task.add_done_callback(closing.discard)
        elif kind == "reload":
            host.reload()
        elif kind == "stop":
            break
        await writer.drain()
    for task in list(closing):
        await task
    for status in host.statuses():
        await host.close(status.partition_id, 0, write=False)
    return True


def main(argv: list[str]) -> int:
    """``python -m worker.engine FD``: started by :meth:`EngineClient.start`, never by hand."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)  # a terminal's ^C reaches the whole group: the parent decides
    sock = socket.socket(fileno=int(argv[1]))
    return asyncio.run(serve(sock))


if __name__ == "__main__":
    # Run as the module ``worker.engine``, not ``__main__``: the records it sends are unpickled by that name.
    from worker import engine  # noqa: PLW0406

    raise SystemExit(engine.main(sys.argv))
