"""The dead-letter lane: where actions that could not be completed are kept, to be re-driven.

A dead letter is one JSON document per action: the raw message (body and application properties),
its position in the hub, the rule, the action, its idempotency key and every attempt's time, error
(secrets masked), kind (transient or not) and reason (the error's short name, ``unavailable``,
``rejected``...: see :class:`~worker.errors.ActionError`). Its name sorts the letters of a
partition in hub order:
``{partition}_{sequence number:020}_{event index:05}_{idempotency key}.json``; letters are written
whole (never half), and a letter for the same action again replaces the earlier one.

Two lanes: a local directory, and a blob container (``https://ACCOUNT.blob.core.windows.net/
CONTAINER[/PREFIX]``) for a worker running in Azure; :func:`dead_letter_lane` makes the one a
setting names. :func:`message_of` reads a letter back: the message it came from, for
``replay --from-dead-letters``, and the failed action and its attempts, for ``dead-letters``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.blob.aio import ContainerClient

from worker.actions.base import PlannedAction
from worker.blob_urls import check_account, parse_container_url
from worker.errors import DeadLetterError, SourceError
from worker.events import Message, Position
from worker.jsontext import dumps

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9.-]")


@dataclass(frozen=True, slots=True)
class Attempt:
    at: datetime
    #: The error, with secret values masked.
    error: str
    transient: bool
    #: The error's short name (:attr:`ActionError.reason <worker.errors.ActionError.reason>`); None in
    #: letters written before reasons were recorded.
    reason: str | None


class _AsyncCloseable(Protocol):
    async def close(self) -> None: ...


class DeadLetterLane(Protocol):
    """Where actions that could not be completed are kept, to be re-driven later."""

    async def write(self, action: PlannedAction, attempts: tuple[Attempt, ...]) -> str:
        """Keep the action; return where it went. Raises DeadLetterError when it cannot."""
        ...

    async def aclose(self) -> None: ...


def dead_letter_name(action: PlannedAction) -> str:
    """The letter's name: sorts a partition's letters in hub order (see the module's docstring)."""
    event = action.event
    position = event.position
    sequence = f"{position.sequence_number:020d}" if position.sequence_number is not None else "unknown"
    partition = _UNSAFE.sub("-", position.partition_id)
    return f"{partition}_{sequence}_{event.body_index:05d}_{action.idempotency_key}.json"


def dead_letter_record(action: PlannedAction, attempts: tuple[Attempt, ...]) -> dict[str, object]:
    """A dead letter: the raw message, its position, the rule, the action and every attempt."""
    event, message = action.event, action.event.message
    position = message.position
    try:
        body: dict[str, str] = {"text": message.body.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"base64": base64.b64encode(message.body).decode("ascii")}
    record: dict[str, object] = {
        "rule": action.rule,
        "action": {"type": action.spec.type, "index": action.spec.index},
        "idempotency_key": action.idempotency_key,
        "event": {"id": event.id, "type": event.type, "subject": event.subject, "index": event.body_index},
        "position": {
            "partition_id": position.partition_id,
            "offset": position.offset,
            "sequence_number": position.sequence_number,
            "enqueued_time": position.enqueued_time.isoformat() if position.enqueued_time else None,
        },
        "properties": {k: _json_safe(v) for k, v in message.properties.items()},
        "body": body,
        "late": action.late,
        "attempts": [
            {"at": a.at.isoformat(), "error": a.error, "transient": a.transient, "reason": a.reason} for a in attempts
        ],
    }
    if action.memo is not None:  # an expiry or a group notification: its event is the one it names
        record["memo"] = {"kind": action.memo.kind, **action.memo.record()}
    return record


def _json_safe(value: object) -> object:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter read back: the message, which action of which event failed, and its attempts."""

    message: Message
    event_id: str
    rule: str
    action_index: int
    action_type: str
    attempts: tuple[Attempt, ...]


def message_of(record: Any, where: str) -> Letter:
    """The message and failed action a dead letter holds. Raises ValueError naming ``where``."""
    try:
        raw_body = record["body"]
        body = raw_body["text"].encode() if "text" in raw_body else base64.b64decode(raw_body["base64"])
        place = record["position"]
        enqueued = place.get("enqueued_time")
        position = Position(
            str(place["partition_id"]),
            place.get("offset"),
            place.get("sequence_number"),
            datetime.fromisoformat(enqueued) if enqueued else None,
        )
        properties = dict(record.get("properties") or {})
        attempts = tuple(
            Attempt(
                _aware(datetime.fromisoformat(attempt["at"])),
                str(attempt["error"]),
                bool(attempt["transient"]),
                str(attempt["reason"]) if attempt.get("reason") is not None else None,
            )
            for attempt in record.get("attempts") or ()
        )
        return Letter(
            Message(body, position, properties),
            str(record["event"]["id"]),
            str(record["rule"]),
            int(record["action"]["index"]),
            str(record["action"]["type"]),
            attempts,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{where}: not a dead letter ({type(exc).__name__}: {exc})") from exc


def _aware(moment: datetime) -> datetime:
    """A time without a zone is taken as UTC (the lanes write UTC), so that times compare."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Redrive:
    """Which actions of which events a re-drive runs again: those that dead letters name."""

    def __init__(self) -> None:
        self._actions: dict[str, set[tuple[str, int]]] = {}

    def add(self, event_id: str, rule: str, action_index: int) -> None:
        self._actions.setdefault(event_id, set()).add((rule, action_index))

    def admits(self, event_id: str, rule: str, action_index: int) -> bool:
        return (rule, action_index) in self._actions.get(event_id, ())


class DeadLetterDirectory:
    """Dead letters as JSON files in a local directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def write(self, action: PlannedAction, attempts: tuple[Attempt, ...]) -> str:
        data = dumps(dead_letter_record(action, attempts), indent=True)
        name = dead_letter_name(action)
        try:
            return await asyncio.to_thread(self._write, name, data)
        except OSError as exc:
            raise DeadLetterError(f"{self.directory / name}: cannot write the dead letter: {exc}") from exc

    def _write(self, name: str, data: bytes) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / name
        partial = path.with_suffix(".json.partial")
        partial.write_bytes(data)
        partial.replace(path)
        return str(path)

    async def aclose(self) -> None:
        return None


class DeadLetterContainer:
    """Dead letters as blobs in a container (created on first use), under an optional prefix."""

    def __init__(self, client: ContainerClient, prefix: str = "", *, credential: _AsyncCloseable | None = None) -> None:
        """``credential``: closed with the lane (the Azure AD credential made for it, if any)."""
        self._client = client
        self._credential = credential
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._created = False

    async def write(self, action: PlannedAction, attempts: tuple[Attempt, ...]) -> str:
        name = self._prefix + dead_letter_name(action)
        data = dumps(dead_letter_record(action, attempts), indent=True)
        where = f"{self._client.url.partition('?')[0]}/{name}"
        try:
            if not self._created:
                with contextlib.suppress(ResourceExistsError):
                    await self._client.create_container()
                self._created = True
            await self._client.upload_blob(name, data, overwrite=True)
        except AzureError as exc:
            reason = str(getattr(exc, "message", None) or exc).split("\n", 1)[0][:200]
            raise DeadLetterError(f"{where}: cannot write the dead letter: {reason}") from exc
        return where

    async def aclose(self) -> None:
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()


def dead_letter_lane(where: Path | str, connection_string: str | None = None) -> DeadLetterLane:
    """The lane at ``where``: a directory, or a blob container URL with an optional prefix.

    Blob credentials as for replay sources: a SAS token in the URL, else ``connection_string``,
    else ``DefaultAzureCredential`` (HTTPS only). Raises SourceError for a malformed URL.
    """
    text = str(where)
    if "://" not in text:
        return DeadLetterDirectory(Path(text))
    location = parse_container_url(text)
    credential = None
    if location.sas_token:
        client = ContainerClient(location.account_url, location.container, credential=location.sas_token)
    elif connection_string:
        client = ContainerClient.from_connection_string(connection_string, location.container)
        check_account(location, client.url)
    elif location.account_url.startswith("http://"):
        raise SourceError(f"{text}: an http:// dead-letter container needs a connection string or a SAS token")
    else:
        from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415 - heavy, and only for Azure AD

        credential = DefaultAzureCredential()
        client = ContainerClient(location.account_url, location.container, credential=credential)
    return DeadLetterContainer(client, location.prefix, credential=credential)
