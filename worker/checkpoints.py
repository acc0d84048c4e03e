"""Where checkpoints, partition ownership and the pipeline state are kept; how a checkpoint is claimed and written.

Two places: Azure Blob Storage, or a local directory for development and demos (one host only).
Ownership goes through the SDK's ``CheckpointStore`` interface (``BlobCheckpointStore``, or
:class:`DirectoryCheckpointStore`). Each partition's checkpoint is written here, in the layout the
SDK and KEDA's azure-eventhub scaler read (``{namespace}/{hub}/{consumer group}/checkpoint/{id}``,
metadata ``offset`` and ``sequencenumber``); in Blob Storage the checkpoint blob also holds the
partition's pipeline state as its content, so that one write saves both.

A checkpoint only moves forward, and only its partition's owner writes it:

- **Claimed.** When a partition opens here, :meth:`PartitionCheckpoint.claim` stamps its checkpoint
  with a claim of its own (a random token, in the metadata), creating it at ``-1`` (what the SDK and
  KEDA read as nothing consumed) if there is none, and reads the state. Every later write is
  conditional on the checkpoint being as this claim last left it (its ETag, or under a file lock),
  so once another worker has claimed the partition, a write of this one, even one an outage had
  delayed, is refused: :class:`~worker.errors.CheckpointSuperseded`, and this worker writes no more.
- **Forward only.** A write below what the checkpoint holds (a previous owner's delayed write
  landed after this one started from an older position) is skipped: the events up to it are
  finished, and doing some of them again here is what idempotency keys are for.
- **Own writes.** A write that timed out here may still land: found with this claim's token, it is
  taken as this worker's own, and the next write goes on from it.
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

from worker.errors import CheckpointSuperseded, SettingsError, StateError
from worker.events import Position
from worker.settings import CheckpointSettings, Scope
from worker.state import SavedState

#: The metadata of a checkpoint that no event is behind yet.
_START: Final = {"offset": "-1", "sequencenumber": "-1"}
_STATE = "pipelinestate"
#: The storage client's own retries: few, so that a write fails within its timeout, not after it.
_RETRIES: Final = 2


class PartitionCheckpoint(Protocol):
    """One partition's checkpoint, as claimed by this worker."""

    async def claim(self) -> SavedState | None:
        """Stamp the checkpoint with this claim, creating it if there is none; the state saved with it.
        Raises StateError for a state that cannot be read (the claim holds), and the store's errors."""

    async def write(self, position: Position, state: SavedState) -> bool:
        """Write the checkpoint at ``position`` with ``state`` (claiming first, if not claimed yet);
        False when skipped, the checkpoint being beyond ``position`` already. Raises
        CheckpointSuperseded once another worker has claimed the partition, and the store's errors."""


@dataclass(frozen=True, slots=True)
class Stores:
    """Ownership through the SDK's interface, and the partitions' checkpoints, of one scope."""

    checkpoints: CheckpointStore
    claims: ClaimStore


class ClaimStore(Protocol):
    def checkpoint(self, partition_id: str) -> PartitionCheckpoint:
        """The partition's checkpoint, to claim (no I/O yet)."""


@contextlib.asynccontextmanager
async def open_stores(settings: CheckpointSettings, scope: Scope) -> AsyncIterator[Stores]:
    """The stores the settings name; a blob container is created if missing."""
    if settings.directory is not None:
        root = settings.directory
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError([f"WORKER_CHECKPOINT_DIR: cannot create {root}: {exc.strerror}"]) from exc
        yield Stores(DirectoryCheckpointStore(root), DirectoryClaims(root, scope))
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
        yield Stores(store, BlobClaims(container, scope))


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


class BlobClaims:
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
    """A checkpoint blob: metadata ``offset``, ``sequencenumber`` and ``claim``; the state as content.

    ``legacy`` is where earlier versions kept the state, read when the checkpoint holds none.
    """

    def __init__(self, blob: BlobClient, legacy: BlobClient) -> None:
        self._blob = blob
        self._legacy = legacy
        self.token = uuid.uuid4().hex
        self._etag: str | None = None
        #: The sequence number the checkpoint holds, as this claim last saw it.
        self.stored: int | None = None

    async def claim(self) -> SavedState | None:
        while True:
            try:
                properties = await self._blob.get_blob_properties()
            except ResourceNotFoundError:
                try:
                    reply = await self._blob.upload_blob(b"", overwrite=False, metadata={**_START, "claim": self.token})
                except ResourceExistsError:
                    continue  # someone created it meanwhile: claim what is there
                self._etag, self.stored = str(reply["etag"]), -1
                return await self._legacy_state()
            metadata = dict(properties.metadata)
            data = b""
            if properties.size:
                download = await self._blob.download_blob(
                    etag=properties.etag, match_condition=MatchConditions.IfNotModified
                )
                data = await download.readall()
            try:
                reply = await self._blob.set_blob_metadata(
                    {**metadata, "claim": self.token},
                    etag=properties.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                continue  # written meanwhile: claim it as it is now
            self._etag, self.stored = str(reply["etag"]), _sequence(metadata)
            if data:
                return SavedState.from_json(data, f"blob {self._blob.blob_name}")
            return await self._legacy_state()

    async def write(self, position: Position, state: SavedState) -> bool:
        if self._etag is None:
            with contextlib.suppress(StateError):  # claimed late: the state found then is of no use
                await self.claim()
        sequence = position.sequence_number if position.sequence_number is not None else -1
        while True:
            if self.stored is not None and sequence <= self.stored:
                return False
            metadata = {"offset": str(position.offset), "sequencenumber": str(sequence), "claim": self.token}
            try:
                reply = await self._blob.upload_blob(
                    state.to_json(),
                    overwrite=True,
                    metadata=metadata,
                    content_settings=ContentSettings(content_type="application/json"),
                    etag=self._etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                await self._after_a_refusal()
                continue
            self._etag, self.stored = str(reply["etag"]), sequence
            return True

    async def _after_a_refusal(self) -> None:
        """The checkpoint changed since this claim last saw it: a write of this worker's own that landed
        late (go on from it), or another worker's claim (raise CheckpointSuperseded)."""
        try:
            properties = await self._blob.get_blob_properties()
        except ResourceNotFoundError:
            raise CheckpointSuperseded(f"blob {self._blob.blob_name}: the checkpoint was removed") from None
        if properties.metadata.get("claim") != self.token:
            raise CheckpointSuperseded(f"blob {self._blob.blob_name}: claimed by another worker")
        self._etag, self.stored = properties.etag, _sequence(properties.metadata)

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


class DirectoryClaims:
    def __init__(self, root: Path, scope: Scope) -> None:
        self._root = root
        self._scope = scope

    def checkpoint(self, partition_id: str) -> DirectoryPartitionCheckpoint:
        scope = self._scope
        return DirectoryPartitionCheckpoint(
            self._root / scope.prefix("checkpoint") / partition_id, self._root / scope.prefix(_STATE) / partition_id
        )


class DirectoryPartitionCheckpoint:
    """A checkpoint file (``offset``, ``sequence_number``, ``claim``) and a state file beside it,
    claimed and written under a lock on the checkpoint folder."""

    def __init__(self, path: Path, state: Path) -> None:
        self._path = path
        self._state = state
        self.token = uuid.uuid4().hex
        self._claimed = False

    async def claim(self) -> SavedState | None:
        data = await asyncio.to_thread(self._claim)
        self._claimed = True
        return None if data is None else SavedState.from_json(data, str(self._state))

    async def write(self, position: Position, state: SavedState) -> bool:
        if not self._claimed:
            with contextlib.suppress(StateError):  # claimed late: the state found then is of no use
                await self.claim()
        return await asyncio.to_thread(self._write, position, state.to_json())

    def _claim(self) -> bytes | None:
        with self._locked():
            record = self._read() or {"offset": "-1", "sequence_number": -1}
            _write_atomically(self._path, orjson.dumps({**record, "claim": self.token}))
            return self._state.read_bytes() if self._state.exists() else None

    def _write(self, position: Position, data: bytes) -> bool:
        with self._locked():
            record = self._read()
            if record is None or record.get("claim") != self.token:
                raise CheckpointSuperseded(f"{self._path}: claimed by another worker")
            sequence = position.sequence_number if position.sequence_number is not None else -1
            if sequence <= int(record["sequence_number"]):
                return False
            _write_atomically(self._state, data)
            record = {"offset": str(position.offset), "sequence_number": sequence, "claim": self.token}
            _write_atomically(self._path, orjson.dumps(record))
            return True

    def _read(self) -> dict[str, Any] | None:
        try:
            return dict(orjson.loads(self._path.read_bytes()))
        except FileNotFoundError:
            return None

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
            record.pop("claim", None)  # the SDK reads the layout of its own store
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
