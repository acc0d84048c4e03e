"""Who is in a consumer group: each worker says so every balancing round, beside the ownership records.

The ownership records show only the workers that own a partition. A worker whose claims all failed (a
peer claimed the same partitions a moment before), or whose partitions were all taken, owns none and
is in no record, yet it takes its share at its next round. Its attendance, renewed every round and
removed at a clean stop, lets its peers count it (:func:`worker.checkpoints.balance.steal_expected`).

A blob ``{namespace}/{eventhub}/{consumer group}/worker/members/{member id}`` (or a file, for a
checkpoint directory; :func:`worker.checkpoints.store.open_stores` places them beside the consumer
group's mark) with the owner id its claims carry; its last modification is the attendance.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Protocol

import orjson
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from worker.checkpoints.balance import Member


class Roster(Protocol):
    async def attend(self, member_id: str, owner_id: str) -> None:
        """Say (again) that ``member_id`` is in the group, claiming as ``owner_id`` ("" before its first claim)."""

    async def leave(self, member_id: str) -> None:
        """Take ``member_id`` out of the group (gone already: nothing to do)."""

    async def members(self) -> list[Member]:
        """Every member's last attendance, live or not."""


class BlobRoster:
    def __init__(self, container: ContainerClient, prefix: str) -> None:
        self._container = container
        #: The members' blobs' names start with it.
        self._prefix = prefix

    async def attend(self, member_id: str, owner_id: str) -> None:
        blob = self._container.get_blob_client(self._prefix + member_id)
        await blob.upload_blob(b"", overwrite=True, metadata={"ownerid": owner_id})

    async def leave(self, member_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            await self._container.delete_blob(self._prefix + member_id)

    async def members(self) -> list[Member]:
        found = []
        async for blob in self._container.list_blobs(name_starts_with=self._prefix, include=["metadata"]):
            metadata = blob.metadata or {}
            modified = blob.last_modified.timestamp() if blob.last_modified else 0.0
            found.append(Member(blob.name.removeprefix(self._prefix), metadata.get("ownerid") or "", modified))
        return found


class DirectoryRoster:
    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def attend(self, member_id: str, owner_id: str) -> None:
        await asyncio.to_thread(self._attend, member_id, owner_id)

    async def leave(self, member_id: str) -> None:
        await asyncio.to_thread((self._folder / member_id).unlink, missing_ok=True)

    async def members(self) -> list[Member]:
        return await asyncio.to_thread(self._members)

    def _attend(self, member_id: str, owner_id: str) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        path = self._folder / member_id
        temporary = path.with_name(f".{member_id}.{os.getpid()}")
        temporary.write_bytes(orjson.dumps({"owner_id": owner_id}))
        temporary.replace(path)

    def _members(self) -> list[Member]:
        found = []
        for path in self._folder.glob("*") if self._folder.is_dir() else ():
            if path.name.startswith("."):
                continue
            try:
                modified = path.stat().st_mtime
                owner_id = str(orjson.loads(path.read_bytes()).get("owner_id", ""))
            except (FileNotFoundError, orjson.JSONDecodeError, AttributeError):
                continue  # left meanwhile, or not a member's file
            found.append(Member(path.name, owner_id, modified))
        return found
