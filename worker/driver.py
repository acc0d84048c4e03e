"""The async driver of one partition's core: runs the released work, one subject at a time, bounded.

:class:`PartitionDriver` feeds a :class:`~worker.core.partition.PartitionCore` and runs the work it
releases with an :class:`~worker.actions.delivery.runner.ActionRunner`. Different subjects proceed
concurrently, up to ``concurrency`` actions at once; one subject's work runs in its release order.
Reading waits while ``max_open`` messages are ahead of the checkpoint, so memory stays bounded when
an action is slow: this is where back-pressure starts (the live worker's inbox carries it on to the
receiver). Use as an async context manager: leaving it waits for all work to finish, and a fatal
error (a dead letter that cannot be written) cancels the rest. The live worker and the replay both
drive their partitions with it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType

import structlog

from worker.actions.base import ActionFate, PlannedAction
from worker.actions.delivery.runner import ActionRunner
from worker.core.partition import PartitionCore, Work
from worker.events import Message
from worker.settings import DriverSettings
from worker.telemetry.spans import Span, Tracer

log = structlog.get_logger("worker.partition_driver")

#: Whether to run the action (event id, rule, action index): a re-drive runs only what failed.
Selection = Callable[[str, str, int], bool]


class PartitionDriver:
    def __init__(
        self,
        core: PartitionCore,
        runner: ActionRunner | None,
        settings: DriverSettings | None = None,
        *,
        select: Selection | None = None,
        clock: Callable[[], float] | None = None,
        announce: bool = False,
        observe: Callable[[PlannedAction], None] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        """``runner`` None is a dry run: actions are counted as planned, never executed (and with
        ``announce``, logged; with ``observe``, each passed to it). ``select``: only the actions it
        admits run (and are counted). ``clock``: the wall clock events' ages run to (None: their
        enqueued times). ``tracer``: a span per work released (None: no tracing, at no cost)."""
        self.core = core
        self._select = select
        self._observe = observe
        self._clock = clock
        self._announce = announce
        self._runner = runner
        self._settings = settings or DriverSettings()
        self._slots = asyncio.Semaphore(self._settings.concurrency)
        self._queues: dict[str, deque[Work]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._progress = asyncio.Event()
        self._tasks = asyncio.TaskGroup()
        self._tracer = tracer
        #: The span of each work released and not finished, by the work's identity (with a tracer).
        self._spans: dict[int, Span] = {}

    async def __aenter__(self) -> PartitionDriver:
        await self._tasks.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self._tasks.__aexit__(kind, error, traceback)

    async def feed(self, message: Message, now: float | None = None) -> None:
        """Take the partition's next message; waits while too much is ahead of the checkpoint."""
        core = self.core
        while core.open_messages >= self._settings.max_open:
            if not self._queues:
                # Everything unfinished is held in the reorder buffer: let it go rather than wait.
                self._submit(core.release_all(wall=self._wall()))
                if not self._queues:
                    break
                continue
            self._progress.clear()
            await self._progress.wait()
        self._submit(core.receive(message, now, wall=self._wall()))

    async def feed_many(self, messages: Iterable[Message], now: float | None = None) -> None:
        """:meth:`feed` for a batch of messages, waiting only when too much is ahead of the checkpoint."""
        core, limit, submit = self.core, self._settings.max_open, self._submit
        wall = self._wall()
        for message in messages:
            if core.open_messages >= limit:
                await self.feed(message, now)
            else:
                submit(core.receive(message, now, wall=wall))

    def tick(self, now: float) -> None:
        """Release the buffer if the partition has been idle for the window; fire the expectations and
        groups that are due."""
        wall = self._wall()
        self._submit(self.core.release_idle(now, wall=wall))
        self._submit(self.core.fire_due(wall))

    async def finish(self) -> None:
        """The source has ended: release everything held and wait until all work is done."""
        self._submit(self.core.release_all(wall=self._wall()))
        await self.drain()

    async def drain(self) -> None:
        """Wait until the work released so far is done; events held in the reorder buffer stay held."""
        while self._queues:
            self._progress.clear()
            await self._progress.wait()

    def cancel(self) -> None:
        """Cancel the work still running (shutdown past its grace): it stays unfinished."""
        for task in self._running:
            task.cancel()

    def _wall(self) -> float | None:
        clock = self._clock
        return clock() if clock is not None else None

    def _submit(self, released: list[Work]) -> None:
        if not released:
            return
        runner, core, tracer = self._runner, self.core, self._tracer
        for work in released:
            if tracer is not None:
                self._spans[id(work)] = _started(tracer, work)
            if runner is None and self._observe is not None:
                self._plan(work, self._observe)
                core.finish(work)
                if tracer is not None:
                    self._end(work)
                continue
            if runner is None:
                count, select, event_id = core.tally.count_action, self._select, work.event.id
                for rule in work.rules:
                    for spec in rule.actions:
                        if select is None or select(event_id, rule.name, spec.index):
                            count(rule.name, spec.type, ActionFate.PLANNED)
                            if self._announce:
                                _planned(work, rule.name, spec.type)
                core.finish(work)
                if tracer is not None:
                    self._end(work)
                continue
            queue = self._queues.get(work.subject)
            if queue is not None:
                queue.append(work)
                continue
            if self._run_now(work, runner):
                continue
            queue = self._queues[work.subject] = deque((work,))
            task = self._tasks.create_task(self._run_subject(work.subject, queue, runner))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _plan(self, work: Work, observe: Callable[[PlannedAction], None]) -> None:
        """A dry run's work, each selected action counted as planned and passed to ``observe``."""
        count, select = self.core.tally.count_action, self._select
        for action in work.actions:
            if select is None or select(action.event.id, action.rule, action.spec.index):
                count(action.rule, action.spec.type, ActionFate.PLANNED)
                observe(action)
                if self._announce:
                    _planned(work, action.rule, action.spec.type)

    def _run_now(self, work: Work, runner: ActionRunner) -> bool:
        """Run the work at once if every action it selects completes synchronously (``log``); its
        subject has nothing queued, so its order holds. False, without running anything, otherwise."""
        select = self._select
        actions = work.actions
        if select is not None:
            actions = tuple(a for a in actions if select(a.event.id, a.rule, a.spec.index))
        immediate = runner.immediate
        if not all(immediate(action) for action in actions):
            return False
        count = self.core.tally.count_action
        fates = [runner.run_now(action) for action in actions]
        for action, fate in zip(actions, fates, strict=True):
            count(action.rule, action.spec.type, fate)
        self.core.finish(work)
        if self._tracer is not None:
            self._end(work, fates)
        self._progress.set()
        return True

    def _end(self, work: Work, fates: list[ActionFate] | None = None) -> None:
        """End the span of a work finished, saying what became of its actions."""
        span = self._spans.pop(id(work), None)
        if span is not None:
            if fates:
                span.set("azml_worker.actions", len(fates))
                dead = sum(fate is ActionFate.DEAD_LETTERED for fate in fates)
                if dead:
                    span.set("azml_worker.dead_lettered", dead)
                    span.failed(f"{dead} of {len(fates)} actions dead-lettered")
            span.end()

    async def _run_subject(self, subject: str, queue: deque[Work], runner: ActionRunner) -> None:
        select, tracer = self._select, self._tracer
        count = self.core.tally.count_action
        try:
            while queue:
                work = queue[0]
                fates: list[ActionFate] = []
                span = self._spans.get(id(work)) if tracer is not None else None
                for action in work.actions:
                    if select is not None and not select(action.event.id, action.rule, action.spec.index):
                        continue
                    # The slot is held while an attempt runs, not while the action waits to retry.
                    if span is None or tracer is None:
                        fate = await runner.run(action, self._slots)
                    else:
                        with tracer.current(span):
                            fate = await runner.run(action, self._slots)
                    count(action.rule, action.spec.type, fate)
                    fates.append(fate)
                self.core.finish(work)
                if tracer is not None:
                    self._end(work, fates)
                queue.popleft()
                self._progress.set()
        except asyncio.CancelledError:
            # Cancelled past the shutdown grace: what it was doing stays unfinished, and so do their spans.
            for work in queue:
                span = self._spans.pop(id(work), None)
                if span is not None:
                    span.failed("cancelled at shutdown: redone by the next owner")
                    span.end()
            raise
        finally:
            if self._queues.get(subject) is queue:
                del self._queues[subject]
            self._progress.set()


def _started(tracer: Tracer, work: Work) -> Span:
    """The span of a work just released."""
    memo = work.memo
    return tracer.event(
        work.event, rules=[rule.name for rule in work.rules], late=work.late, memo=None if memo is None else memo.kind
    )


def _planned(work: Work, rule: str, action_type: str) -> None:
    """A dry run's action, said instead of done."""
    event = work.event
    log.info(
        "action.planned",
        rule=rule,
        action_type=action_type,
        event_id=event.id,
        event_type=event.type,
        subject=event.subject,
        partition_id=event.position.partition_id,
        sequence_number=event.position.sequence_number,
        late=work.late,
    )
