"""Errors raised or returned by the worker, all of them in this one module.

    WorkerError
    ├── RulesError          a rules table failed to load; carries every Problem found
    ├── RulesTestError      a rules test file (``worker test``) is invalid; carries every Problem found
    ├── DecodeError         a message body could not be turned into events (returned, never raised
    │   │                   out of the core: the decoder hands it back inside an InvalidEvent)
    │   ├── NotUtf8         the body is not UTF-8 text
    │   ├── NotJson         the body is text but not JSON
    │   ├── NotAnEvent      the JSON is not an Event Grid or CloudEvents 1.0 event
    │   ├── MissingField    a required envelope field is absent
    │   └── BadField        an envelope field has the wrong type or an unparseable value
    ├── ActionError         an action could not be executed; ``transient`` says whether to retry
    │   ├── TargetUnavailable   transient: connection refused or dropped, timed out, 408, 429,
    │   │                       5xx (with the target's Retry-After, if any)
    │   ├── TargetRejected      permanent: the target answered and refused (any other 4xx)
    │   ├── RenderError         permanent: a template could not be rendered for this event
    │   ├── OverLimit           permanent: a message over its service's limits, even shortened
    │   └── CircuitOpen         transient: the target's circuit is open; no request was made
    ├── DeadLetterError     a dead letter could not be written (fatal: the event is not finished)
    ├── StateError          the pipeline state saved beside a checkpoint cannot be read
    ├── CheckpointMoved     a checkpoint was written between its reading and its reset (a worker
    │                       runs on the partition): the reset leaves it as it is
    ├── PartitionFailed     a partition's pipeline stopped on a fatal error, or is not open here
    ├── ChildProcessFailed  the pipeline process (the child of ``worker run``) exited, could not
    │                       start, or sent what cannot be read
    ├── ReceiverStalled     a partition delivered nothing for the stall timeout while it had lag
    │                       (raised into the SDK's receive loop, which reopens the link)
    ├── CaptureError        an Event Hubs Capture file is not Avro, not EventData, or is corrupt
    ├── SourceError         a replay source cannot be listed or read (missing path, bad URL,
    │                       missing container, failed authentication); also an event hub that
    │                       ``send`` cannot publish to, or an unreadable events file
    ├── SettingsError       the live worker's settings are missing, malformed or contradictory
    └── LocalHubError       the local hub's own errors (worker.localhub.errors): bytes that are
                            not the AMQP it understands, a selector filter it cannot apply

Messages name what is wrong and where (file, line, rule, key, partition), the bad value, and what
to do next. Code never branches on the text of an exception.
"""

from __future__ import annotations

from dataclasses import dataclass


class WorkerError(Exception):
    """Base class of every error the worker raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a rules table, located as precisely as the loader could."""

    file: str
    line: int | None
    column: int | None
    rule: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        rule = f" rule {self.rule!r}:" if self.rule else ""
        return f"{where}:{rule} {self.message}"


class RulesError(WorkerError):
    """A rules table is invalid. ``problems`` lists everything found, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid rules table ({count} problem{'s' * (count != 1)}):\n{lines}")


class RulesTestError(WorkerError):
    """A rules test file is invalid. ``problems`` lists everything found, each with its file and line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid rules test file ({count} problem{'s' * (count != 1)}):\n{lines}")


class DecodeError(WorkerError):
    """A message body, or one element of it, is not a usable event."""

    #: A short stable name for counting and metrics ("not_utf8", "not_json", ...).
    reason = "invalid"


class NotUtf8(DecodeError):
    reason = "not_utf8"


class NotJson(DecodeError):
    reason = "not_json"


class NotAnEvent(DecodeError):
    reason = "not_an_event"


class MissingField(DecodeError):
    reason = "missing_field"


class BadField(DecodeError):
    reason = "bad_field"


class ActionError(WorkerError):
    """An action failed. ``transient`` tells whether trying again may succeed."""

    #: A short stable name for counting and dead letters ("unavailable", "rejected", ...).
    reason = "failed"

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class TargetUnavailable(ActionError):
    """The target could not be reached or answered "not now". ``retry_after``: seconds it asked to wait."""

    reason = "unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, transient=True)
        self.retry_after = retry_after


class TargetRejected(ActionError):
    """The target answered and refused the request: trying again will not help."""

    reason = "rejected"

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


class RenderError(ActionError):
    """A template failed on this event (a missing key, a wrong type): the action cannot be built."""

    reason = "render"

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


class OverLimit(ActionError):
    """A message over a limit of the service it is for (a Teams card's size, Slack's blocks), which
    shortening could not bring under it: sending it would fail, or be dropped silently."""

    reason = "over_limit"

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


class CircuitOpen(ActionError):
    """The target failed repeatedly and its circuit is open: the attempt was not made."""

    reason = "circuit_open"

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class DeadLetterError(WorkerError):
    """A dead letter could not be written; the message names the lane and the cause."""


class StateError(WorkerError):
    """Saved pipeline state that cannot be read; the message names the blob or file and what to do."""


class CheckpointMoved(WorkerError):
    """A checkpoint changed between its reading and its reset; the message names the blob or file."""


class PartitionFailed(WorkerError):
    """A partition's pipeline stopped on a fatal error (a dead letter that cannot be written), or the
    partition is not open in this host."""


class ChildProcessFailed(WorkerError):
    """The pipeline process stopped, could not start, or sent a message that cannot be read."""


class ReceiverStalled(WorkerError):
    """A partition delivered nothing for the stall timeout while it had events to deliver."""


class CaptureError(WorkerError):
    """An Event Hubs Capture file cannot be read: not Avro, no EventData fields, truncated or corrupt.

    The message names the file and, when known, the record (counted from 1).
    """


class SourceError(WorkerError):
    """A replay source cannot be listed or read. The message names the source and what to do."""


class SettingsError(WorkerError):
    """The worker's settings are wrong. ``problems`` names each setting (variable and flag) and why."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid settings ({count} problem{'s' * (count != 1)}):\n{lines}")
