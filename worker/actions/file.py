"""The ``file`` action: append one JSON line per executed action to a local file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import IO

from worker.actions.base import ActionParams, PlannedAction
from worker.actions.clients import Clients
from worker.errors import ActionError
from worker.jsontext import dumps


class FileParams(ActionParams):
    #: The file to append to, relative to the worker's working directory; parents are created.
    path: Path
    #: Also write the event's ``data``.
    include_data: bool = False


def action_record(action: PlannedAction, *, include_data: bool = False) -> dict[str, object]:
    """The JSON object written for one executed action."""
    event, position = action.event, action.event.position
    record: dict[str, object] = {
        "rule": action.rule,
        "action_index": action.spec.index,
        "idempotency_key": action.idempotency_key,
        "event_id": event.id,
        "event_type": event.type,
        "subject": event.subject,
        "topic": event.topic,
        "event_time": event.time.isoformat() if event.time else None,
        "partition_id": position.partition_id,
        "offset": position.offset,
        "sequence_number": position.sequence_number,
        "late": action.late,
    }
    if action.memo is not None:
        record.update(action.memo.record())
    if include_data:
        record["data"] = event.data
    return record


def _json_line(record: dict[str, object]) -> bytes:
    return dumps(record) + b"\n"


class FileExecutor:
    def __init__(self, params: FileParams, clients: Clients) -> None:
        self._params = params
        self.target = f"file:{params.path}"
        self._handle: IO[bytes] | None = None
        self._lock = asyncio.Lock()

    async def execute(self, action: PlannedAction) -> None:
        line = _json_line(action_record(action, include_data=self._params.include_data))
        async with self._lock:
            try:
                if self._handle is None:
                    self._params.path.parent.mkdir(parents=True, exist_ok=True)
                    self._handle = self._params.path.open("ab")
                self._handle.write(line)
                self._handle.flush()
            except OSError as exc:
                raise ActionError(f"file action: cannot append to {self._params.path}: {exc}", transient=True) from exc

    async def aclose(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
