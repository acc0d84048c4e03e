"""A replay on every core: its partitions replayed apart, in processes at once (``replay --processes N``).

Partitions are independent (every event of a subject is in one partition), so each can be replayed
in a process of its own. The parent plans the run as a one-process replay does, then hands out the
partitions, the largest first, each to the next free process: itself (one partition at a time, on
a thread, with the rules and plan it has: it works while the others start) and ``N - 1`` spawned
worker processes (not forked: the parent may hold threads). A worker process gets a partition's id
and the names of its files, and rebuilds what it needs once, from a :class:`ReplayJob`, which is
picklable where the plan (open blob clients) and the rules table (compiled functions) are not: the
rules, loaded from the same files (their fingerprint checked against the parent's), and a plan of
the same sources. Every partition is replayed with :func:`~worker.replay.run.replay_partition`, the
one-process code path, through an action runner and a dead-letter lane of its own (dead letters are
named by partition and sequence number: they do not collide), and gives its
:class:`~worker.core.accounting.Tally` and, for a backtest, its :class:`~worker.replay.backtest.Backtest`. The
parent merges them in partition order: the counts, the report and the backtest page are those of
one process.

What is per partition rather than per run: the runner's per-target limits and circuits, and the
order in which the ``file`` lines of different partitions interleave (each partition's lines keep
their order).

A fatal error in a partition (a capture file that cannot be read, a dead letter that cannot be
written) stops the others within :data:`STOP_POLL` (their actions in flight are cancelled, as a
one-process replay's are when it fails), and is raised again in the parent with the same type and
message. A worker process that dies (killed, or out of memory) fails the run the same way, with
:class:`~worker.errors.ChildProcessFailed` naming the partitions worker processes were replaying.
Workers log to the same stream, in the parent's format, masking the parent's secrets, and
ignore SIGINT: the parent stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing import util
from typing import Final, Protocol

import structlog

from worker.actions.secrets import Placeholders
from worker.core.accounting import Tally
from worker.core.rules import RulesTable
from worker.errors import CaptureError, ChildProcessFailed, DeadLetterError, Problem, RulesError, SourceError
from worker.log import configure as configure_logging
from worker.masking import MASKER
from worker.replay.backtest import Backtest
from worker.replay.run import ReplaySettings, action_runner, collector_for_replay, replay_partition, tracer_for
from worker.replay.sources import CaptureFile, Plan, plan_replay
from worker.rulefiles.directories import Fingerprint, fingerprint, paths_of
from worker.rulefiles.loading import load_rules
from worker.settings import LogFormat
from worker.telemetry.spans import NO_TRACER, Tracer

log = structlog.get_logger("worker.replay")

#: A plan of fewer bytes than this is replayed in one process unless ``--processes`` says otherwise:
#: a worker process takes most of a second to start (it imports the worker and loads the rules),
#: about what one process takes to replay this much.
SMALL_PLAN: Final = 32 * 1024 * 1024
#: Seconds between a worker's checks of whether it is asked to stop.
STOP_POLL: Final = 0.1

#: The errors that end a replay with their message (exit code 2), raised again in the parent.
FATAL: Final = (SourceError, CaptureError, DeadLetterError)


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the platform tells), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def log_format_of_parent() -> LogFormat:
    """The log format this process's ``auto`` stands for: workers write to the same stream in it."""
    return "json" if not sys.stderr.isatty() else "console"


def processes_for(plan: Plan, asked: int | None) -> int:
    """How many processes replay ``plan``: ``asked``, else the usable cores (one for a plan smaller
    than :data:`SMALL_PLAN`); never more than the plan has partitions."""
    if asked is None:
        asked = 1 if plan.total_bytes < SMALL_PLAN else usable_cores()
    return max(1, min(asked, len(plan.partitions)))


@dataclass(frozen=True, slots=True)
class ReplayJob:
    """What a worker process needs to rebuild its part of a replay (picklable: no open client)."""

    #: The rules files and directories, as given, and what they held when the parent loaded them.
    rules: tuple[str, ...]
    rules_fingerprint: Fingerprint
    settings: ReplaySettings
    #: The sources, planned as the parent planned them (with the settings' connection string).
    sources: tuple[str, ...]
    #: The partitions the parent's plan holds.
    partitions: frozenset[str]
    #: The sources are dead-letter lanes (a re-drive).
    from_dead_letters: bool = False
    since: datetime | None = None
    until: datetime | None = None
    #: Collect each partition's :class:`Backtest`.
    backtest: bool = False
    log_level: str = "info"
    log_format: LogFormat = "auto"


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """One partition replayed (in a worker process, or in this one): its counts (and backtest), or why
    it has none."""

    partition_id: str
    tally: Tally | None = None
    backtest: Backtest | None = None
    #: Fatal errors, as (index in :data:`FATAL`, message).
    errors: tuple[tuple[int, str], ...] = ()
    #: The rules did not load: their problems.
    problems: tuple[Problem, ...] = ()
    #: It stopped (or never started) because another partition failed.
    stopped: bool = False

    @property
    def failed(self) -> bool:
        return bool(self.errors or self.problems)


def replay_in_processes(
    job: ReplayJob,
    plan: Plan,
    table: RulesTable,
    processes: int,
    progress: _Progress,
    *,
    backtest: Backtest | None = None,
) -> Tally:
    """Replay ``plan``'s partitions in ``processes`` processes: this one (with ``table``, on a thread
    of its own) and ``processes - 1`` worker processes; the counts of the whole run, as one process
    counts them. ``backtest`` (with ``job.backtest``) receives every partition's, in partition order.
    Raises what a partition raised (the first one in partition order that failed), and
    :class:`~worker.errors.ChildProcessFailed` when a worker process dies."""
    if processes < 2:
        raise ValueError(f"a replay in processes needs at least 2 of them, not {processes}")
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    results: dict[str, PartitionResult] = {}
    log.info("replay.processes", processes=processes, partitions=len(plan.partitions))
    tracer = tracer_for(job.settings)  # this process's partitions'; each worker process starts its own
    try:
        with (
            ProcessPoolExecutor(
                processes - 1, mp_context=context, initializer=_start, initargs=(job, MASKER.known(), stop)
            ) as pool,
            ThreadPoolExecutor(1, thread_name_prefix="replay") as here,
        ):

            def replay_here(partition_id: str, files: tuple[CaptureFile, ...]) -> Future[PartitionResult]:
                return here.submit(_replay_partition, partition_id, files, plan, table, job, stop, tracer)

            def replay_there(partition_id: str, files: tuple[CaptureFile, ...]) -> Future[PartitionResult]:
                return pool.submit(_replay_one, partition_id, tuple(file.name for file in files))

            schedule = _Schedule(_largest_first(plan.partitions), replay_here, replay_there, processes - 1)
            try:
                _collect(schedule, plan, progress, results, stop)
            except BaseException:
                stop.set()
                schedule.cancel()
                raise
    except BrokenProcessPool as exc:
        raise ChildProcessFailed(f"a replay process exited unexpectedly: {exc}") from exc
    finally:
        progress.close()
        tracer.close()
    ordered = [results[partition_id] for partition_id in plan.partitions if partition_id in results]
    _raise_failures(ordered)
    total = Tally()
    for result in ordered:
        if result.tally is None:  # pragma: no cover - a partition stops only when another one failed
            raise ChildProcessFailed(f"partition {result.partition_id} was not replayed")
        total.add(result.tally)
        if backtest is not None and result.backtest is not None:
            backtest.merge(result.backtest)
    return total


class _Progress(Protocol):
    def file_done(self, file: CaptureFile, events_read: int) -> None: ...

    def close(self) -> None: ...


class _Event(Protocol):
    def is_set(self) -> bool: ...

    def set(self) -> None: ...


_Partition = tuple[str, tuple[CaptureFile, ...]]
_Start = Callable[[str, tuple[CaptureFile, ...]], "Future[PartitionResult]"]


def _largest_first(partitions: Mapping[str, tuple[CaptureFile, ...]]) -> list[_Partition]:
    """The partitions, the largest first (the run ends soonest when the longest ones start first)."""
    return sorted(partitions.items(), key=lambda item: -sum(file.size or 0 for file in item[1]))


class _Schedule:
    """Which partition runs where: one at a time in this process, and one per worker process, each
    taking the next (the largest left) when it is free, so that this process works while the worker
    processes start."""

    def __init__(self, partitions: list[_Partition], here: _Start, there: _Start, workers: int) -> None:
        self._left = list(reversed(partitions))
        self._here, self._there, self._workers = here, there, workers
        #: What runs, and the partition each runs.
        self.running: dict[Future[PartitionResult], str] = {}
        #: Which of them runs in this process, if one does.
        self._local: Future[PartitionResult] | None = None

    def start(self) -> None:
        """Hand the partitions left, the largest first, to whichever process is free: this one first
        (it starts at once, the worker processes in most of a second), then the worker processes."""
        if self._left and self._local is None:
            self._local = self._run(self._here)
        while self._left and len(self.running) - (self._local is not None) < self._workers:
            self._run(self._there)

    def _run(self, start: _Start) -> Future[PartitionResult]:
        partition_id, files = self._left.pop()
        future = start(partition_id, files)
        self.running[future] = partition_id
        return future

    def elsewhere(self) -> list[str]:
        """The partitions running in worker processes, in partition order."""
        return sorted(partition_id for future, partition_id in self.running.items() if future is not self._local)

    def done(self, future: Future[PartitionResult]) -> None:
        del self.running[future]
        if future is self._local:
            self._local = None

    def cancel(self) -> None:
        """Start nothing more, and cancel what has not started."""
        self._left.clear()
        for future in self.running:
            future.cancel()


def _collect(
    schedule: _Schedule, plan: Plan, progress: _Progress, results: dict[str, PartitionResult], stop: _Event
) -> None:
    """Run the schedule and gather the partitions' results as they come; at the first failure, stop
    the others."""
    read = 0
    schedule.start()
    while schedule.running:
        finished, _ = wait(schedule.running, return_when=FIRST_COMPLETED)
        if any(isinstance(future.exception(), BrokenProcessPool) for future in finished if not future.cancelled()):
            elsewhere = schedule.elsewhere()
            replaying = f"partition{'s' if len(elsewhere) > 1 else ''} {', '.join(elsewhere)}"
            raise ChildProcessFailed(
                f"a replay process exited unexpectedly while replaying {replaying} (killed, or out of memory?):"
                " no report is written; replay again, with fewer --processes if memory is short"
            )
        for future in finished:
            schedule.done(future)
            if future.cancelled():
                continue
            result = future.result()
            results[result.partition_id] = result
            if result.failed:
                stop.set()
                schedule.cancel()
            elif result.tally is not None:
                read += result.tally.read
                for file in plan.partitions[result.partition_id]:
                    progress.file_done(file, read)
        if not stop.is_set():
            schedule.start()


def _raise_failures(results: Sequence[PartitionResult]) -> None:
    """Raise the errors of the first partition (in partition order) that failed, as one process would."""
    for result in results:
        if result.problems:
            raise RulesError(list(result.problems))
        if result.errors:
            raise ExceptionGroup("replay failed", [FATAL[kind](message) for kind, message in result.errors])


# -- in a worker process ------------------------------------------------------------------------


class _Stopped(Exception):
    """Another partition failed: this one stops where it is."""


@dataclass(slots=True)
class _Worker:
    """A worker process's job, and what it built from it (once, on its first partition)."""

    job: ReplayJob
    stop: _Event
    tracer: Tracer = NO_TRACER
    table: RulesTable | None = None
    plan: Plan | None = field(default=None, repr=False)

    def loaded(self) -> tuple[RulesTable, Plan]:
        job = self.job
        if self.table is None:
            if fingerprint(job.rules) != job.rules_fingerprint:
                raise SourceError(f"{', '.join(job.rules)}: the rules changed since the replay started: run it again")
            env = Placeholders() if job.settings.dry_run else None
            self.table = load_rules(paths_of(job.rules), env=env)
        if self.plan is None:
            self.plan = plan_replay(
                job.sources,
                dead_letters=job.from_dead_letters,
                connection_string=job.settings.connection_string,
                partitions=job.partitions,
                since=job.since,
                until=job.until,
            )
            util.Finalize(None, self.plan.close, exitpriority=10)  # its clients, when the process exits
        return self.table, self.plan


_worker: _Worker | None = None


def _start(job: ReplayJob, secrets: frozenset[str], stop: _Event) -> None:
    """A worker process's start: the parent's secrets and logging; SIGINT left to the parent."""
    global _worker  # noqa: PLW0603 - one job per process, set when the pool starts it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    MASKER.add_all(secrets)
    configure_logging(job.log_level, job.log_format)
    tracer = tracer_for(job.settings)
    util.Finalize(None, tracer.close, exitpriority=10)  # what is buffered is sent when the process exits
    _worker = _Worker(job, stop, tracer)


def _replay_one(partition_id: str, names: tuple[str, ...]) -> PartitionResult:
    """Replay one partition, whose files the parent planned as ``names``, in this worker process."""
    worker = _worker
    if worker is None:  # pragma: no cover - the pool's initializer sets it
        raise RuntimeError("not a replay worker process")
    if worker.stop.is_set():
        return PartitionResult(partition_id, stopped=True)
    try:
        table, plan = worker.loaded()
        files = _files_named(plan, partition_id, names)
    except RulesError as exc:
        return PartitionResult(partition_id, problems=exc.problems)
    except FATAL as exc:
        return PartitionResult(partition_id, errors=((_fatal_kind(exc), str(exc)),))
    return _replay_partition(partition_id, files, plan, table, worker.job, worker.stop, worker.tracer)


def _replay_partition(
    partition_id: str,
    files: tuple[CaptureFile, ...],
    plan: Plan,
    table: RulesTable,
    job: ReplayJob,
    stop: _Event,
    tracer: Tracer,
) -> PartitionResult:
    """Replay one partition on this thread (in a worker process, or on the parent's thread for it):
    its result, its fatal errors as values."""
    if stop.is_set():
        return PartitionResult(partition_id, stopped=True)
    backtest = Backtest() if job.backtest else None
    errors: list[tuple[int, str]] = []
    stopped = False
    try:
        work = _replay(partition_id, files, plan, table, job.settings, backtest, tracer)
        tally = asyncio.run(_unless_stopped(work, stop))
    except* _Stopped:
        stopped = True
    except* FATAL as group:
        errors = [(_fatal_kind(exc), str(exc)) for exc in _leaves(group)]
    if errors or stopped:
        return PartitionResult(partition_id, errors=tuple(errors), stopped=stopped)
    return PartitionResult(partition_id, tally, backtest)


async def _replay(
    partition_id: str,
    files: tuple[CaptureFile, ...],
    plan: Plan,
    table: RulesTable,
    settings: ReplaySettings,
    backtest: Backtest | None,
    tracer: Tracer,
) -> Tally:
    runner = action_runner(settings, tracer=tracer)
    try:
        observe = backtest.add if backtest is not None else None
        with collector_for_replay():
            return await replay_partition(
                partition_id, files, plan, table, settings, runner, _Unreported(), observe=observe, tracer=tracer
            )
    finally:
        if runner is not None:
            await runner.aclose()


async def _unless_stopped(work: Coroutine[object, object, Tally], stop: _Event) -> Tally:
    """``work``'s result; cancelled, raising :class:`_Stopped`, once the parent asks the workers to
    stop (checked every :data:`STOP_POLL` seconds): what it was doing ends as a one-process replay's
    other partitions end when one fails."""
    task = asyncio.create_task(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=STOP_POLL)
        if done:
            return task.result()
        if stop.is_set():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise _Stopped


def _files_named(plan: Plan, partition_id: str, names: tuple[str, ...]) -> tuple[CaptureFile, ...]:
    """The files of ``partition_id`` that the parent planned, as this process's plan has them (files
    written since are left out)."""
    found = {file.name: file for file in plan.partitions.get(partition_id, ())}
    for name in names:
        if name not in found:
            raise SourceError(f"{name}: not found (it may have been deleted since it was listed)")
    return tuple(found[name] for name in names)


class _Unreported:
    """No progress in a worker process: the parent reports each partition as it is done."""

    def file_done(self, file: CaptureFile, events_read: int) -> None:
        return None

    def close(self) -> None:
        return None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions of ``group``, its nested groups flattened."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


def _fatal_kind(exc: BaseException) -> int:
    return next(index for index, kind in enumerate(FATAL) if isinstance(exc, kind))
