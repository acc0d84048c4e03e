"""Where checkpoints, partition ownership and the pipeline state are kept, and how a checkpoint is written.

Two places: Azure Blob Storage (the SDK's ``BlobCheckpointStore``, whose blob layout KEDA's
azure-eventhub scaler reads, plus one state blob per partition beside it), or a local directory
for development and demos (one host only). :meth:`Stores.write` is the one place that writes a
checkpoint: the pipeline state of a partition first, then its checkpoint record in the SDK's
shape. A crash between the two leaves a state a little ahead of the checkpoint, which is safe (the
events in between are recognised as finished), never behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.eventhub.aio import CheckpointStore
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore
from azure.identity.aio import DefaultAzureCredential
from azure.storage.blob.aio import ContainerClient

from worker.errors import SettingsError
from worker.events import Position
from worker.settings import CheckpointSettings, Scope
from worker.state import SavedState


class StateStore(Protocol):
    """The pipeline state kept beside each partition's checkpoint."""

    async def load(self, partition_id: str) -> SavedState | None: ...

    async def save(self, partition_id: str, state: SavedState) -> None: ...


@dataclass(frozen=True, slots=True)
class Stores:
    """The checkpoint store (the SDK's interface: ownership and checkpoints) and the state store of one scope."""

    checkpoints: CheckpointStore
    states: StateStore
    scope: Scope

    async def write(self, partition_id: str, position: Position, state: SavedState) -> None:
        """Write a partition's checkpoint at ``position``: its pipeline state first, then the checkpoint.

        Raises what the stores raise (``AzureError``, ``OSError``); nothing is half-written that matters.
        """
        await self.states.save(partition_id, state)
        scope = self.scope
        await self.checkpoints.update_checkpoint(
            {
                "fully_qualified_namespace": scope.namespace,
                "eventhub_name": scope.eventhub,
                "consumer_group": scope.consumer_group,
                "partition_id": partition_id,
                "offset": position.offset,
                "sequence_number": position.sequence_number,
            }
        )


_STATE = "pipelinestate"


@contextlib.asynccontextmanager
async def open_stores(settings: CheckpointSettings, scope: Scope) -> AsyncIterator[Stores]:
    """The checkpoint and state stores the settings name; a blob container is created if missing."""
    if settings.directory is not None:
        root = settings.directory
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError([f"WORKER_CHECKPOINT_DIR: cannot create {root}: {exc.strerror}"]) from exc
        yield Stores(DirectoryCheckpointStore(root), DirectoryStateStore(root, scope), scope)
        return
    async with contextlib.AsyncExitStack() as stack:
        if settings.connection_string is not None:
            container = ContainerClient.from_connection_string(settings.connection_string, settings.container)
            store = BlobCheckpointStore.from_connection_string(settings.connection_string, settings.container)
        else:
            assert settings.account_url is not None  # noqa: S101 - the settings validator ensures one
            credential = await stack.enter_async_context(DefaultAzureCredential())
            container = ContainerClient(settings.account_url, settings.container, credential=credential)
            store = BlobCheckpointStore(settings.account_url, settings.container, credential=credential)
        await stack.enter_async_context(container)
        await stack.enter_async_context(store)
        await _ensure_container(container)
        yield Stores(store, BlobStateStore(container, scope), scope)


async def _ensure_container(container: ContainerClient) -> None:
    try:
        await container.create_container()
    except ResourceExistsError:
        return
    except AzureError as exc:
        raise SettingsError(
            [f"checkpoint container {container.container_name!r} at {container.url}: cannot be created ({exc})"]
        ) from exc


class BlobStateStore:
    """One blob per partition, ``{namespace}/{hub}/{consumer group}/pipelinestate/{partition}``."""

    def __init__(self, container: ContainerClient, scope: Scope) -> None:
        self._container = container
        self._prefix = scope.prefix(_STATE)

    async def load(self, partition_id: str) -> SavedState | None:
        name = self._prefix + partition_id
        try:
            stream = await self._container.download_blob(name)
            data = await stream.readall()
        except ResourceNotFoundError:
            return None
        return SavedState.from_json(data, f"blob {name}")

    async def save(self, partition_id: str, state: SavedState) -> None:
        await self._container.upload_blob(self._prefix + partition_id, state.to_json(), overwrite=True)


class DirectoryStateStore:
    """One JSON file per partition, under the same names as the blobs."""

    def __init__(self, root: Path, scope: Scope) -> None:
        self._dir = root / scope.prefix(_STATE)

    async def load(self, partition_id: str) -> SavedState | None:
        path = self._dir / partition_id
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        return SavedState.from_json(data, str(path))

    async def save(self, partition_id: str, state: SavedState) -> None:
        await asyncio.to_thread(_write_atomically, self._dir / partition_id, state.to_json())


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
