"""The checkpoint store the consumer client balances through, watched.

Each partition the worker claims holds what it reads until a steal by a peer is no longer expected.

The SDK's client runs a balancing round every load balancing interval: it lists the ownership
records, then claims (or renews) what it keeps. :class:`SettlingStore` passes both to the store it
wraps and, after each round, decides for every partition claimed since: it acts once its claim has
lasted the settle time and the records show no steal from this worker coming
(:mod:`worker.checkpoints.balance`). Until then the receiver holds its batches
(:meth:`SettlingStore.settled`), so that a partition taken by a peer starting at the same moment
closes having acted on nothing, and the peer starts from the same place. A partition lost is held
from then on, until the SDK closes it.

A partition's receiver opens a while after the round that claimed it (seconds, on a busy machine),
and a peer may take the partition meanwhile: a receiver opened then would take the link from the new
owner's, whose SDK then gives the partition up, leaving a peer that owns nothing, which no record
shows. So a partition opens only once the records still name this worker (:meth:`SettlingStore.opening`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from azure.core.exceptions import AzureError
from azure.eventhub.aio import CheckpointStore

from worker.checkpoints.balance import Member, Ownership, Release, release, steal_expected
from worker.checkpoints.members import Roster

log = structlog.get_logger("worker.receiver")


class SettlingStore(CheckpointStore):
    """Delegates to ``store``; holds each partition claimed through it until it settles."""

    def __init__(
        self,
        store: CheckpointStore,
        *,
        settle: float,
        expiry: float,
        roster: Roster | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._roster = roster
        #: This worker in the roster: its attendance is renewed at the start of every round.
        self.member_id = str(uuid.uuid4())
        #: The peers' attendance, read at the start of the round under way.
        self._members: list[Member] = []
        self._settle = settle
        self._expiry = expiry
        self._clock = clock
        self._wall = wall
        #: The hub's partitions: set by the receiver before the first round.
        self.partition_count = 0
        #: The owner id the SDK claims with (its ownership records' ``owner_id``): known at its first claim.
        self.owner_id: str | None = None
        #: The records of the round under way (listed, not yet claimed).
        self._listed: list[Ownership] | None = None
        #: Where the rounds list the records (namespace, event hub, consumer group): from the first.
        self._scope: tuple[str, str, str] | None = None
        #: Set when the round under way ends (and replaced by the next one's).
        self._round_end = asyncio.Event()
        #: Each partition owned here: when it was claimed (monotonic), and whether it may act.
        self._claimed: dict[str, float] = {}
        self._settled: dict[str, asyncio.Event] = {}

    # --- what the receiver asks ------------------------------------------------------------------

    async def settled(self, partition_id: str) -> None:
        """Return once the partition may act on what it reads (at once for one not claimed through
        this store); a partition lost before it settled never returns: the SDK closes it."""
        event = self._settled.get(partition_id)
        if event is not None:
            await event.wait()

    async def opening(self, partition_id: str) -> None:
        """Return once the records name this worker as the partition's owner (at once when they cannot
        be read): a partition a peer took since the round that claimed it waits here until the SDK's
        next round closes it, or claims it back."""
        if await self._ours(partition_id):
            return
        log.info("partition.taken_before_open", partition_id=partition_id)
        while True:
            await self._round_end.wait()
            if await self._ours(partition_id):
                return

    async def leave(self) -> None:
        """Take this worker out of the roster (at a clean stop, its partitions released)."""
        if self._roster is None:
            return
        try:
            await self._roster.leave(self.member_id)
        except (AzureError, OSError) as exc:
            log.warning("roster.unwritten", member_id=self.member_id, error=str(exc) or type(exc).__name__)

    async def _attend(self) -> list[Member]:
        """Renew this worker's attendance; the peers' (none when the roster cannot be read or written:
        a round goes on without it)."""
        if self._roster is None:
            return []
        try:
            await self._roster.attend(self.member_id, self.owner_id or "")
            members = await self._roster.members()
        except (AzureError, OSError) as exc:
            log.warning("roster.unwritten", member_id=self.member_id, error=str(exc) or type(exc).__name__)
            return []
        return [member for member in members if member.member_id != self.member_id]

    async def _ours(self, partition_id: str) -> bool:
        if self._scope is None or not self.owner_id:
            return True
        try:
            records = await self._store.list_ownership(*self._scope)
        except (AzureError, OSError) as exc:
            log.warning("partition.owner_unread", partition_id=partition_id, error=str(exc) or type(exc).__name__)
            return True
        return any(
            str(record["partition_id"]) == partition_id and record.get("owner_id") == self.owner_id
            for record in records
        )

    def settling(self, partition_id: str) -> bool:
        """Owned here and not yet acting."""
        event = self._settled.get(partition_id)
        return event is not None and not event.is_set()

    # --- the SDK's interface -------------------------------------------------------------------

    async def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        self._scope = (fully_qualified_namespace, eventhub_name, consumer_group)
        listing = self._store.list_ownership(fully_qualified_namespace, eventhub_name, consumer_group, **kwargs)
        found, self._members = await asyncio.gather(listing, self._attend())
        listed = list(found)
        if self._listed is not None:
            self._keep(set())  # the last round claimed nothing: the SDK has closed what it owned
        # A copy: the SDK writes its claims into the records it was given.
        self._listed = [_ownership(record) for record in listed]
        return listed

    async def claim_ownership(
        self, ownership_list: Iterable[dict[str, Any]], **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        asked = list(ownership_list)
        listed, self._listed = self._listed, None
        claimed = list(await self._store.claim_ownership(asked, **kwargs))
        owner_id = next((str(record["owner_id"]) for record in asked if record.get("owner_id")), "")
        if owner_id and listed is not None:  # a balancing round (not a release)
            if owner_id != self.owner_id:  # its first claims: say under which id it owns
                self.owner_id = owner_id
                await self._attend()
            self._round(owner_id, claimed, listed, asked)
            self._round_end.set()
            self._round_end = asyncio.Event()
        return claimed

    async def update_checkpoint(self, checkpoint: dict[str, str | int | None], **kwargs: Any) -> None:
        await self._store.update_checkpoint(checkpoint, **kwargs)

    async def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        return await self._store.list_checkpoints(fully_qualified_namespace, eventhub_name, consumer_group, **kwargs)

    # --- a round's end ---------------------------------------------------------------------------

    def _keep(self, kept: set[str]) -> None:
        """What this worker owns now: a partition no longer kept is lost (it acts no more, and the SDK
        closes it); one newly kept is claimed now, and holds until it settles."""
        for partition_id in list(self._claimed):
            if partition_id not in kept:
                del self._claimed[partition_id]
                self._settled[partition_id] = asyncio.Event()
        for partition_id in kept - self._claimed.keys():
            self._claimed[partition_id] = self._clock()
            self._settled[partition_id] = asyncio.Event()

    def _round(
        self, owner_id: str, claimed: list[dict[str, Any]], listed: list[Ownership], asked: list[dict[str, Any]]
    ) -> None:
        kept = {str(record["partition_id"]) for record in claimed}
        self._keep(kept)
        unsettled = [p for p, event in self._settled.items() if p in kept and not event.is_set()]
        if not unsettled:
            return
        # A claim that failed went to a peer this round: one the records may not show yet. Hold on.
        steal = len(claimed) < len(asked) or steal_expected(
            owner_id,
            self._view(listed, claimed, asked),
            self.partition_count,
            self._wall(),
            self._expiry,
            self._members,
        )
        now = self._clock()
        for partition_id in unsettled:
            held = now - self._claimed[partition_id]
            why = release(held, self._settle, self._expiry, steal=steal)
            if why is None:
                continue
            self._settled[partition_id].set()
            if self._settle > 0:
                tell = log.warning if why is Release.OUTHELD else log.info
                tell("partition.settled", partition_id=partition_id, held_seconds=round(held, 3), why=why.value)

    def _view(
        self, listed: list[Ownership], claimed: list[dict[str, Any]], asked: list[dict[str, Any]]
    ) -> list[Ownership]:
        """The records as this round left them: what it listed, with what it claimed; a claim that
        failed went to a peer, unknown until the next round (left out)."""
        records = {record.partition_id: record for record in listed}
        for record in asked:
            records.pop(str(record["partition_id"]), None)
        records.update((str(record["partition_id"]), _ownership(record)) for record in claimed)
        return list(records.values())


def _ownership(record: dict[str, Any]) -> Ownership:
    return Ownership(
        str(record["partition_id"]), str(record.get("owner_id") or ""), float(record.get("last_modified_time") or 0)
    )
