"""Where checkpoints, partition ownership and the pipeline state are kept; how a checkpoint is written.

Two places: Azure Blob Storage, or a local directory for development and demos (one host only).
Ownership goes through the SDK's ``CheckpointStore`` interface (``BlobCheckpointStore``, or
:class:`DirectoryCheckpointStore`). Each partition's checkpoint is written here, in the layout the
SDK and KEDA's azure-eventhub scaler read (``{namespace}/{hub}/{consumer group}/checkpoint/{id}``,
metadata ``offset`` and ``sequencenumber``); in Blob Storage the checkpoint blob also holds the
partition's pipeline state as its content, so that one write saves both.

**A checkpoint only moves forward.** :meth:`PartitionCheckpoint.write` is a compare-and-swap: it
writes only a position beyond what the checkpoint holds, and only if the checkpoint is still as it
last saw it (its ETag; a file lock for a directory). Whatever was written meanwhile (another
worker's write, or one of its own that timed out here but landed) is read again, and the write goes
on only if it still moves the checkpoint forward. So a write that an outage delayed, from a worker
that has lost the partition since, cannot move the checkpoint back: it lands only if it moves it
forward, and then it says what is true (every event up to it was finished, by that worker); the new
owner skips its own writes until it passes it.

Only an operator moves a checkpoint back (``checkpoints reset``): :meth:`PartitionCheckpoint.reset`,
a separate method, still a compare-and-swap against the checkpoint as read, so that a worker's write
in between is detected rather than overwritten; it empties the pipeline state beside the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.eventhub.aio import CheckpointStore
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore
from azure.identity.aio import DefaultAzureCredential
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobClient, ContainerClient

from worker.checkpoints.marks import ConsumerGroupMark, ConsumerGroupUse, unmarked_use
from worker.checkpoints.members import BlobRoster, DirectoryRoster, Roster
from worker.checkpoints.standing import Stored
from worker.core.state import SavedState
from worker.errors import CheckpointMoved, SettingsError, StateError
from worker.events import Position
from worker.settings import CheckpointSettings, Scope

_STATE = "pipelinestate"
#: A directory checkpoint not read yet.
_UNSEEN: Final = object()
#: Where the consumer group's mark is kept (:mod:`worker.checkpoints.marks`): beside, not among, the SDK's blobs.
_WORKER, _MARK, _MEMBERS = "worker", "use", "members"
#: The storage client's own retries: few, so that a write fails within its timeout, not after it.
_RETRIES: Final = 2


class PartitionCheckpoint(Protocol):
    """One partition's checkpoint, as this worker sees it."""

    async def load(self) -> SavedState | None:
        """Read the checkpoint, and return the state saved with it. Raises StateError for a state that
        cannot be read (the checkpoint is read all the same), and the store's errors."""

    async def write(self, position: Position, state: SavedState, *, refresh: bool = False) -> bool:
        """Write the checkpoint at ``position`` with ``state`` if that moves it forward (reading it
        first, if not read yet); False when skipped, the checkpoint being there or beyond already.
        ``refresh``: also at the position it holds, if nobody wrote it since this worker last read or
        wrote it (the pipeline state changed without the position: an expectation fired).
        Raises the store's errors."""

    @property
    def record(self) -> Stored | None:
        """The checkpoint record as :meth:`load` or :meth:`look` last read it (None: there was none, or
        it is unreadable, or it was not read)."""

    async def look(self) -> Stored | None:
        """Read the checkpoint record alone (not the state): where it stands and when it was written;
        None when there is none. A :meth:`reset` then compares against what was read."""

    async def reset(self, position: Position) -> None:
        """Move the checkpoint to ``position``, back or forward, with an empty pipeline state (what it
        knew of the events around the old position is wrong for the new one); an operator's decision
        (``checkpoints reset``), never the worker's. Only if the checkpoint is as last read (reading it
        first, if not read yet): raises CheckpointMoved when it was written meanwhile, and the store's
        errors."""


class Checkpoints(Protocol):
    def checkpoint(self, partition_id: str) -> PartitionCheckpoint:
        """The partition's checkpoint, not read yet."""

    async def read_mark(self) -> ConsumerGroupMark | None:
        """The consumer group's mark (:mod:`worker.checkpoints.marks`), if it has one."""

    async def mark(self, use: ConsumerGroupUse, since: str) -> ConsumerGroupMark:
        """Mark the consumer group for ``use`` unless it has a mark already; the mark it holds then."""


@dataclass(frozen=True, slots=True)
class Stores:
    """Ownership through the SDK's interface, the partitions' checkpoints, and the workers that say they
    are in the consumer group, of one scope."""

    checkpoints: CheckpointStore
    partitions: Checkpoints
    roster: Roster


@contextlib.asynccontextmanager
async def open_stores(settings: CheckpointSettings, scope: Scope, *, create: bool = True) -> AsyncIterator[Stores]:
    """The stores the settings name; a blob container (a directory) is created if missing, or without
    ``create`` (a reader) its absence is a SettingsError."""
    if settings.directory is not None:
        root = settings.directory
        if not create and not root.is_dir():
            raise SettingsError([f"WORKER_CHECKPOINT_DIR: {root} is not a directory (no worker has run with it?)"])
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError([f"WORKER_CHECKPOINT_DIR: cannot create {root}: {exc.strerror}"]) from exc
        yield Stores(
            DirectoryCheckpointStore(root),
            DirectoryCheckpoints(root, scope),
            DirectoryRoster(root / scope.prefix(_WORKER) / _MEMBERS),
        )
        return
    async with contextlib.AsyncExitStack() as stack:
        if settings.connection_string is not None:
            container = ContainerClient.from_connection_string(
                settings.connection_string, settings.container, retry_total=_RETRIES
            )
            store = BlobCheckpointStore.from_connection_string(settings.connection_string, settings.container)
        else:
            assert settings.account_url is not None  # noqa: S101 - the settings validator ensures one
            credential = await stack.enter_async_context(DefaultAzureCredential())
            container = ContainerClient(
                settings.account_url, settings.container, credential=credential, retry_total=_RETRIES
            )
            store = BlobCheckpointStore(settings.account_url, settings.container, credential=credential)
        await stack.enter_async_context(container)
        await stack.enter_async_context(store)
        if create:
            await _ensure_container(container)
        elif not await container.exists():
            raise SettingsError(
                [
                    f"checkpoint container {container.container_name!r} at {container.url}: not found (no worker "
                    "has run with these settings? WORKER_CHECKPOINT_CONTAINER names it)"
                ]
            )
        yield Stores(
            store, BlobCheckpoints(container, scope), BlobRoster(container, f"{scope.prefix(_WORKER)}{_MEMBERS}/")
        )


async def mark_consumer_group(stores: Stores, scope: Scope, use: ConsumerGroupUse, since: str) -> ConsumerGroupMark:
    """The consumer group's use: its mark, or ``use`` (marked now) for a new group; a group with
    checkpoints from before marks is marked as the acting workers' (see :mod:`worker.checkpoints.marks`)."""
    found = await stores.partitions.read_mark()
    if found is not None:
        return found
    listed = await stores.checkpoints.list_checkpoints(scope.namespace, scope.eventhub, scope.consumer_group)
    return await stores.partitions.mark(unmarked_use(bool(list(listed))) or use, since)


def _mark_json(use: ConsumerGroupUse, since: str) -> bytes:
    return orjson.dumps({"use": use.value, "since": since})


def _read_mark(data: bytes, where: str) -> ConsumerGroupMark:
    try:
        record = orjson.loads(data)
        return ConsumerGroupMark(ConsumerGroupUse(record["use"]), str(record["since"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StateError(f"{where}: not a consumer group mark ({exc}); delete it to mark the group again") from exc


async def _ensure_container(container: ContainerClient) -> None:
    try:
        await container.create_container()
    except ResourceExistsError:
        return
    except AzureError as exc:
        raise SettingsError(
            [f"checkpoint container {container.container_name!r} at {container.url}: cannot be created ({exc})"]
        ) from exc


# --- Blob Storage ----------------------------------------------------------------------------------


class BlobCheckpoints:
    def __init__(self, container: ContainerClient, scope: Scope) -> None:
        self._container = container
        self._scope = scope

    def checkpoint(self, partition_id: str) -> BlobPartitionCheckpoint:
        scope = self._scope
        return BlobPartitionCheckpoint(
            self._container.get_blob_client(scope.prefix("checkpoint") + partition_id),
            self._container.get_blob_client(scope.prefix(_STATE) + partition_id),
        )

    async def read_mark(self) -> ConsumerGroupMark | None:
        blob = self._container.get_blob_client(self._scope.prefix(_WORKER) + _MARK)
        try:
            download = await blob.download_blob()
        except ResourceNotFoundError:
            return None
        return _read_mark(await download.readall(), f"blob {blob.blob_name}")

    async def mark(self, use: ConsumerGroupUse, since: str) -> ConsumerGroupMark:
        blob = self._container.get_blob_client(self._scope.prefix(_WORKER) + _MARK)
        try:
            await blob.upload_blob(_mark_json(use, since), overwrite=False)
        except ResourceExistsError:
            found = await self.read_mark()
            if found is not None:
                return found
        return ConsumerGroupMark(use, since)


class BlobPartitionCheckpoint:
    """A checkpoint blob: metadata ``offset`` and ``sequencenumber``, the state as content.

    ``legacy`` is where earlier versions kept the state, read when the checkpoint holds none.
    """

    def __init__(self, blob: BlobClient, legacy: BlobClient) -> None:
        self._blob = blob
        self._legacy = legacy
        self._seen = False
        #: The checkpoint as last seen: its ETag (None: there was none) and its sequence number.
        self._etag: str | None = None
        self.stored: int | None = None
        #: The checkpoint record as last seen (None: there was none, or it is malformed).
        self._record: Stored | None = None

    async def load(self) -> SavedState | None:
        data = await self._look(content=True)
        if data:
            return SavedState.from_json(data, f"blob {self._blob.blob_name}")
        return await self._legacy_state()

    async def write(self, position: Position, state: SavedState, *, refresh: bool = False) -> bool:
        if not self._seen:
            await self._look(content=False)
        sequence = _sequence_of(position)
        while self.stored is None or sequence > self.stored or (refresh and sequence == self.stored):
            try:
                await self._upload(position, state)
            except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError):
                await self._look(content=False)  # written meanwhile: compare again, and only move forward
                refresh = False
                continue
            return True
        return False

    @property
    def record(self) -> Stored | None:
        return self._record

    async def look(self) -> Stored | None:
        await self._look(content=False)
        return self._record

    async def reset(self, position: Position) -> None:
        if not self._seen:
            await self._look(content=False)
        try:
            reply = await self._upload(position, SavedState())
        except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError) as exc:
            raise CheckpointMoved(
                f"blob {self._blob.blob_name}: written since it was read (a worker is running on the partition?); "
                "left as it is"
            ) from exc
        self._record = Stored(str(position.offset), _sequence_of(position), reply.get("last_modified"))

    async def _upload(self, position: Position, state: SavedState) -> dict[str, Any]:
        """Write the checkpoint at ``position`` with ``state`` if the blob is still as last seen (its
        ETag; absent, if there was none); the store's errors when it is not."""
        sequence = _sequence_of(position)
        if self._etag is None:
            condition: dict[str, Any] = {"overwrite": False}  # created: none was there
        else:
            condition = {"overwrite": True, "etag": self._etag, "match_condition": MatchConditions.IfNotModified}
        reply: dict[str, Any] = await self._blob.upload_blob(
            state.to_json(),
            metadata={"offset": str(position.offset), "sequencenumber": str(sequence)},
            content_settings=ContentSettings(content_type="application/json"),
            **condition,
        )
        self._etag, self.stored = str(reply["etag"]), sequence
        return reply

    async def _look(self, *, content: bool) -> bytes:
        """Note the checkpoint's ETag and sequence number; and with ``content``, return the state it holds."""
        self._seen = True
        try:
            properties = await self._blob.get_blob_properties()
        except ResourceNotFoundError:
            self._etag, self.stored, self._record = None, None, None
            return b""
        metadata = dict(properties.metadata)
        self._etag, self.stored = properties.etag, _sequence(metadata)
        offset = metadata.get("offset")
        self._record = None
        if offset is not None and self.stored is not None:
            self._record = Stored(offset, self.stored, properties.last_modified)
        if not (content and properties.size):
            return b""
        try:
            download = await self._blob.download_blob(
                etag=properties.etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return await self._look(content=True)  # written meanwhile: read it as it is now
        return bytes(await download.readall())

    async def _legacy_state(self) -> SavedState | None:
        try:
            download = await self._legacy.download_blob()
            data = await download.readall()
        except ResourceNotFoundError:
            return None
        return SavedState.from_json(data, f"blob {self._legacy.blob_name}")


def _sequence_of(position: Position) -> int:
    """The sequence number a checkpoint at ``position`` records (-1: before the first event)."""
    return position.sequence_number if position.sequence_number is not None else -1


def _sequence(metadata: dict[str, str]) -> int | None:
    text = metadata.get("sequencenumber")
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


# --- a local directory -----------------------------------------------------------------------------


class DirectoryCheckpoints:
    def __init__(self, root: Path, scope: Scope) -> None:
        self._root = root
        self._scope = scope

    def checkpoint(self, partition_id: str) -> DirectoryPartitionCheckpoint:
        scope = self._scope
        return DirectoryPartitionCheckpoint(
            self._root / scope.prefix("checkpoint") / partition_id, self._root / scope.prefix(_STATE) / partition_id
        )

    async def read_mark(self) -> ConsumerGroupMark | None:
        path = self._root / self._scope.prefix(_WORKER) / _MARK
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        return _read_mark(data, str(path))

    async def mark(self, use: ConsumerGroupUse, since: str) -> ConsumerGroupMark:
        path = self._root / self._scope.prefix(_WORKER) / _MARK
        return await asyncio.to_thread(self._mark, path, use, since)

    @staticmethod
    def _mark(path: Path, use: ConsumerGroupUse, since: str) -> ConsumerGroupMark:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("xb") as file:  # the first mark stays
                file.write(_mark_json(use, since))
        except FileExistsError:
            return _read_mark(path.read_bytes(), str(path))
        return ConsumerGroupMark(use, since)


class DirectoryPartitionCheckpoint:
    """A checkpoint file (``offset``, ``sequence_number``) and a state file beside it, compared and
    written under a lock on the checkpoint folder."""

    def __init__(self, path: Path, state: Path) -> None:
        self._path = path
        self._state = state
        #: The checkpoint file as last read by look (None: there was none); _UNSEEN before.
        self._seen: bytes | object | None = _UNSEEN

    async def load(self) -> SavedState | None:
        data = await asyncio.to_thread(self._load)
        return None if data is None else SavedState.from_json(data, str(self._state))

    async def write(self, position: Position, state: SavedState, *, refresh: bool = False) -> bool:
        return await asyncio.to_thread(self._write, position, state.to_json(), refresh)

    @property
    def record(self) -> Stored | None:
        seen = self._seen
        return _file_record(seen, None) if isinstance(seen, bytes) else None

    async def look(self) -> Stored | None:
        return await asyncio.to_thread(self._look)

    async def reset(self, position: Position) -> None:
        await asyncio.to_thread(self._reset, position)

    def _look(self) -> Stored | None:
        with self._locked():
            try:
                data = self._path.read_bytes()
                written = datetime.fromtimestamp(self._path.stat().st_mtime, UTC)
            except FileNotFoundError:
                self._seen = None
                return None
        self._seen = data
        return _file_record(data, written)

    def _reset(self, position: Position) -> None:
        if self._seen is _UNSEEN:
            self._look()
        with self._locked():
            try:
                now: bytes | None = self._path.read_bytes()
            except FileNotFoundError:
                now = None
            if now != self._seen:
                raise CheckpointMoved(
                    f"{self._path}: written since it was read (a worker is running on the partition?); left as it is"
                )
            self._seen = self._put(position, SavedState().to_json())

    def _load(self) -> bytes | None:
        with self._locked():
            self._seen = self._path.read_bytes() if self._path.exists() else None
            return self._state.read_bytes() if self._state.exists() else None

    def _write(self, position: Position, data: bytes, refresh: bool) -> bool:
        with self._locked():
            try:
                now = self._path.read_bytes()
            except FileNotFoundError:
                now = None
            if now is not None:
                stored = int(orjson.loads(now)["sequence_number"])
                sequence = _sequence_of(position)
                # The same position again only to refresh the state, and only if nobody wrote since.
                if sequence < stored or (sequence == stored and not (refresh and now == self._seen)):
                    return False
            self._seen = self._put(position, data)
            return True

    def _put(self, position: Position, state: bytes) -> bytes:
        """Write the state, then the checkpoint record (held under the lock); the record written."""
        record = orjson.dumps({"offset": str(position.offset), "sequence_number": _sequence_of(position)})
        _write_atomically(self._state, state)
        _write_atomically(self._path, record)
        return record

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with (self._path.parent / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


class DirectoryCheckpointStore(CheckpointStore):
    """The SDK's checkpoint store interface on a local directory, with the blob store's layout.

    Ownership claims compare and swap under a file lock, as the blob store does with ETags, so
    several processes on one host share partitions correctly. For development and demos; a
    consumer group across hosts needs Blob Storage.
    """

    def __init__(self, root: Path) -> None:
        self._root = root

    async def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        scope = Scope(fully_qualified_namespace, eventhub_name, consumer_group)
        return await asyncio.to_thread(self._list, scope, "ownership")

    async def claim_ownership(
        self, ownership_list: Iterable[dict[str, Any]], **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        return await asyncio.to_thread(self._claim, list(ownership_list))

    async def update_checkpoint(self, checkpoint: dict[str, str | int | None], **kwargs: Any) -> None:
        scope = Scope(
            str(checkpoint["fully_qualified_namespace"]),
            str(checkpoint["eventhub_name"]),
            str(checkpoint["consumer_group"]),
        )
        record = {"offset": str(checkpoint["offset"]), "sequence_number": checkpoint["sequence_number"]}
        path = self._root / (scope.prefix("checkpoint") + str(checkpoint["partition_id"]))
        await asyncio.to_thread(_write_atomically, path, orjson.dumps(record))

    async def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        scope = Scope(fully_qualified_namespace, eventhub_name, consumer_group)
        return await asyncio.to_thread(self._list, scope, "checkpoint")

    def _list(self, scope: Scope, kind: str) -> list[dict[str, Any]]:
        folder = self._root / scope.prefix(kind)
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            record = orjson.loads(path.read_bytes())
            out.append(
                {
                    "fully_qualified_namespace": scope.namespace,
                    "eventhub_name": scope.eventhub,
                    "consumer_group": scope.consumer_group,
                    "partition_id": path.name,
                    **record,
                }
            )
        return out

    def _claim(self, ownership_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
        claimed = []
        for ownership in ownership_list:
            scope = Scope(
                ownership["fully_qualified_namespace"], ownership["eventhub_name"], ownership["consumer_group"]
            )
            folder = self._root / scope.prefix("ownership")
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / ownership["partition_id"]
            with (folder / ".lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                current = orjson.loads(path.read_bytes()) if path.exists() else None
                expected = ownership.get("etag")
                if (current is None and expected is not None) or (current is not None and current["etag"] != expected):
                    continue  # someone else claimed it since it was listed
                record = {
                    "owner_id": ownership["owner_id"],
                    "etag": uuid.uuid4().hex,
                    "last_modified_time": time.time(),
                }
                _write_atomically(path, orjson.dumps(record))
            claimed.append({**ownership, **record})
        return claimed


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)


def _file_record(data: bytes, written: datetime | None) -> Stored | None:
    """A directory checkpoint's record; None when malformed: as if none (the SDK could not read it either)."""
    try:
        record = orjson.loads(data)
        return Stored(str(record["offset"]), int(record["sequence_number"]), written)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
