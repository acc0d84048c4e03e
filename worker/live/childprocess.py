"""The partitions' pipelines in a child process: :class:`ChildProcessHost`, the parent's end.

Receiving (the SDK's AMQP decoding) and processing (decoding the events, the rules, the actions)
each take a core this way. The parent keeps the Event Hubs client and partition ownership, and
drives the child (``python -m worker.live.child``, see :mod:`worker.live.child`) over a socket pair with the
:data:`~worker.live.handoff.Command` records; the child runs an
:class:`~worker.live.inprocess.InProcessHost` and writes the checkpoints and pipeline state itself, and
answers with :data:`~worker.live.handoff.Reply` records. Each partition's
:class:`~worker.live.handoff.Inbox` is kept here, filled by ``put`` and emptied by the child's
:class:`~worker.live.handoff.Taken` replies: that is the back-pressure on the receiver.

If the child exits, :meth:`ChildProcessHost.failure` raises :class:`~worker.errors.ChildProcessFailed`
and the worker stops; what the child had not finished is redone after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import assert_never

import structlog

from worker.core.accounting import Tally
from worker.errors import ChildProcessFailed, PartitionFailed
from worker.live.handoff import (
    Close,
    Closed,
    Command,
    Delivery,
    Fatal,
    Inbox,
    Open,
    PartitionStatus,
    Put,
    Ready,
    Reload,
    Reply,
    Report,
    Start,
    Stop,
    Taken,
    frame,
    read_reply,
)
from worker.live.metrics import ActionMetrics
from worker.settings import ProcessingSettings

log = structlog.get_logger("worker.childprocess")

#: Seconds the child gets to exit after being told to stop (its partitions are closed by then).
STOP_TIMEOUT = 30.0


class ChildProcessHost:
    """:class:`~worker.live.handoff.PartitionHost` in the pipeline process; start it with :meth:`start`."""

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
        self._inbox = inbox
        self._open: dict[str, Inbox] = {}
        self._closing: dict[str, asyncio.Future[None]] = {}
        self._statuses: dict[str, tuple[PartitionStatus, float]] = {}
        self._tally = Tally()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._error: str | None = None
        self._stopping = False

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, settings: ProcessingSettings, metrics: ActionMetrics) -> AsyncIterator[ChildProcessHost]:
        """Start the pipeline process for ``settings``; on leaving, stop it (its partitions closed first)."""
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "worker.live.child",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        host = cls(process, reader, writer, metrics, settings.driver.inbox)
        writer.write(frame(Start(settings)))
        reading = asyncio.create_task(host._receive(), name="childprocess")
        try:
            await host._ready
            log.info("childprocess.started", pid=process.pid)
            yield host
        finally:
            await host._stop()
            await reading

    @property
    def pid(self) -> int:
        """The pipeline process's."""
        return self._process.pid

    # --- PartitionHost -------------------------------------------------------------------------

    async def open(self, partition_id: str) -> None:
        if partition_id in self._open:
            await self.close(partition_id, 0, write=False)
        self._open[partition_id] = Inbox(partition_id, self._inbox)
        self._send(Open(partition_id))

    async def put(self, partition_id: str, deliveries: list[Delivery]) -> None:
        inbox = self._open.get(partition_id)
        if inbox is None or inbox.failed:
            raise PartitionFailed(f"partition {partition_id}: its pipeline has stopped")
        self._send(Put(partition_id, deliveries))
        await self._writer.drain()
        inbox.hand(len(deliveries))
        await inbox.room()

    async def close(self, partition_id: str, grace: float, *, write: bool) -> None:
        if self._open.pop(partition_id, None) is None or self._ended.done():
            return  # nothing to close: never opened, or the process has gone (failure() says so)
        closed = self._closing[partition_id] = asyncio.get_running_loop().create_future()
        self._send(Close(partition_id, grace, write))
        try:
            await closed
        finally:
            self._closing.pop(partition_id, None)
            self._statuses.pop(partition_id, None)

    def reload(self) -> None:
        with contextlib.suppress(ChildProcessFailed):  # the failure surfaces through failure()
            self._send(Reload())

    def tally(self) -> Tally:
        return self._tally

    def statuses(self) -> list[PartitionStatus]:
        now = time.monotonic()
        out = []
        for partition_id in self._open:
            found = self._statuses.get(partition_id)
            if found is not None:
                status, at = found
                out.append(replace(status, checkpoint_age=status.checkpoint_age + now - at))  # as of now
        return out

    async def failure(self) -> None:
        await asyncio.shield(self._ended)
        if not self._stopping:
            raise ChildProcessFailed(self._error or f"the pipeline process exited (code {self._process.returncode})")

    # --- the wire ------------------------------------------------------------------------------

    def _send(self, command: Command) -> None:
        if self._ended.done():
            raise ChildProcessFailed(self._error or "the pipeline process has exited")
        self._writer.write(frame(command))

    async def _receive(self) -> None:
        try:
            while True:
                self._handle(await read_reply(self._reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the child has closed its end: it is exiting
        except ChildProcessFailed as exc:  # a frame that cannot be read: nothing more from it can be trusted
            self._error = str(exc)
            self._process.kill()
        except Exception as exc:
            self._error = f"the pipeline process's messages cannot be handled: {exc!r}"
            self._process.kill()
            raise
        finally:
            code = await self._process.wait()
            if not self._stopping:
                self._error = self._error or f"the pipeline process exited (code {code})"
                log.error("childprocess.exited", code=code, error=self._error)
            error = ChildProcessFailed(self._error or "the pipeline process has exited")
            for inbox in self._open.values():
                inbox.fail()
            for closed in self._closing.values():
                if not closed.done():
                    closed.set_exception(error)
            if not self._ready.done():
                self._ready.set_exception(error)
            self._ended.set_result(None)

    def _handle(self, reply: Reply) -> None:
        match reply:
            case Taken(partition_id, number):
                inbox = self._open.get(partition_id)
                if inbox is not None:
                    inbox.take(number)
            case Report(statuses, tally, actions):
                now = time.monotonic()
                self._statuses = {status.partition_id: (status, now) for status in statuses}
                self._tally = tally
                self._metrics.load(actions)
                for status in statuses:
                    inbox = self._open.get(status.partition_id)
                    if status.failed and inbox is not None:
                        inbox.fail()
            case Closed(partition_id):
                closed = self._closing.get(partition_id)
                if closed is not None and not closed.done():
                    closed.set_result(None)
            case Ready():
                self._ready.set_result(None)
            case Fatal(error):
                self._error = error
            case _:
                assert_never(reply)

    async def _stop(self) -> None:
        self._stopping = True
        if not self._ended.done():
            with contextlib.suppress(ConnectionError):
                self._writer.write(frame(Stop()))
                await self._writer.drain()
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await asyncio.shield(self._ended)
            except TimeoutError:
                log.error("childprocess.stop_timeout", seconds=STOP_TIMEOUT)  # noqa: TRY400 - no traceback to show
                self._process.kill()
        self._writer.close()
