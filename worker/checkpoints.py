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

from worker.errors import SettingsError
from worker.events import Position
from worker.settings import CheckpointSettings, Scope
from worker.state import SavedState

_STATE = "pipelinestate"
#: The storage client's own retries: few, so that a write fails within its timeout, not after it.
_RETRIES: Final = 2


class PartitionCheckpoint(Protocol):
    """One partition's checkpoint, as this worker sees it."""

    async def load(self) -> SavedState | None:
        """Read the checkpoint, and return the state saved with it. Raises StateError for a state that
        cannot be read (the checkpoint is read all the same), and the store's errors."""

    async def write(self, position: Position, state: SavedState) -> bool:
        """Write the checkpoint at ``position`` with ``state`` if that moves it forward (reading it
        first, if not read yet); False when skipped, the checkpoint being there or beyond already.
        Raises the store's errors."""


class Checkpoints(Protocol):
    def checkpoint(self, partition_id: str) -> PartitionCheckpoint:
        """The partition's checkpoint, not read yet."""


@dataclass(frozen=True, slots=True)
class Stores:
    """Ownership through the SDK's interface, and the partitions' checkpoints, of one scope."""

    checkpoints: CheckpointStore
    partitions: Checkpoints


@contextlib.asynccontextmanager
async def open_stores(settings: CheckpointSettings, scope: Scope) -> AsyncIterator[Stores]:
    """The stores the settings name; a blob container is created if missing."""
    if settings.directory is not None:
        root = settings.directory
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError([f"WORKER_CHECKPOINT_DIR: cannot create {root}: {exc.strerror}"]) from exc
        yield Stores(DirectoryCheckpointStore(root), DirectoryCheckpoints(root, scope))
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
        await _ensure_container(container)
        yield Stores(store, BlobCheckpoints(container, scope))


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

    async def load(self) -> SavedState | None:
        data = await self._look(content=True)
        if data:
            return SavedState.from_json(data, f"blob {self._blob.blob_name}")
        return await self._legacy_state()

    async def write(self, position: Position, state: SavedState) -> bool:
        if not self._seen:
            await self._look(content=False)
        sequence = position.sequence_number if position.sequence_number is not None else -1
        while self.stored is None or sequence > self.stored:
            if self._etag is None:
                condition: dict[str, Any] = {"overwrite": False}  # created: none was there
            else:
                condition = {"overwrite": True, "etag": self._etag, "match_condition": MatchConditions.IfNotModified}
            try:
                reply = await self._blob.upload_blob(
                    state.to_json(),
                    metadata={"offset": str(position.offset), "sequencenumber": str(sequence)},
                    content_settings=ContentSettings(content_type="application/json"),
                    **condition,
                )
            except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError):
                await self._look(content=False)  # written meanwhile: compare again
                continue
            self._etag, self.stored = str(reply["etag"]), sequence
            return True
        return False

    async def _look(self, *, content: bool) -> bytes:
        """Note the checkpoint's ETag and sequence number; and with ``content``, return the state it holds."""
        self._seen = True
        try:
            properties = await self._blob.get_blob_properties()
        except ResourceNotFoundError:
            self._etag, self.stored = None, None
            return b""
        self._etag, self.stored = properties.etag, _sequence(dict(properties.metadata))
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


class DirectoryPartitionCheckpoint:
    """A checkpoint file (``offset``, ``sequence_number``) and a state file beside it, compared and
    written under a lock on the checkpoint folder."""

    def __init__(self, path: Path, state: Path) -> None:
        self._path = path
        self._state = state

    async def load(self) -> SavedState | None:
        data = await asyncio.to_thread(self._load)
        return None if data is None else SavedState.from_json(data, str(self._state))

    async def write(self, position: Position, state: SavedState) -> bool:
        return await asyncio.to_thread(self._write, position, state.to_json())

    def _load(self) -> bytes | None:
        with self._locked():
            return self._state.read_bytes() if self._state.exists() else None

    def _write(self, position: Position, data: bytes) -> bool:
        sequence = position.sequence_number if position.sequence_number is not None else -1
        with self._locked():
            try:
                stored: int | None = int(orjson.loads(self._path.read_bytes())["sequence_number"])
            except FileNotFoundError:
                stored = None
            if stored is not None and sequence <= stored:
                return False
            _write_atomically(self._state, data)
            _write_atomically(self._path, orjson.dumps({"offset": str(position.offset), "sequence_number": sequence}))
            return True

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
