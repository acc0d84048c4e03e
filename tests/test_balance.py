"""Whether a peer is expected to steal a partition, held to the SDK's own balancing; when a partition
just claimed acts; and the store that holds a claimed partition until it settles."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from azure.eventhub import LoadBalancingStrategy
from azure.eventhub.aio._eventprocessor._ownership_manager import OwnershipManager
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from worker.checkpoints.balance import Member, Ownership, Release, owners, release, steal_expected
from worker.checkpoints.store import DirectoryCheckpointStore
from worker.live.claims import SettlingStore

#: Now: the SDK's balancing reads the clock itself.
NOW = time.time()
EXPIRY = 60.0


def held(*counts: int, free: int = 0, stale: int = 0) -> list[Ownership]:
    """Records of owners a, b, c... owning ``counts`` partitions, then ``free`` released ones and
    ``stale`` ones whose owner stopped renewing."""
    owned = [(owner, NOW - 1) for owner, count in zip("abcdefgh", counts, strict=False) for _ in range(count)]
    owned += [("", NOW - 1)] * free + [("z", NOW - EXPIRY - 1)] * stale
    return [Ownership(str(number), owner, modified) for number, (owner, modified) in enumerate(owned)]


@pytest.mark.parametrize(
    ("counts", "partitions", "expected"),
    [
        ((8,), 8, False),  # alone: nobody to steal
        ((7, 1), 8, True),  # the first claimer of a hub, and a peer that took one
        ((5, 1, 1, 1), 8, True),
        ((2, 2, 2, 2), 8, False),  # balanced
        ((3, 3, 2), 8, False),  # as balanced as 8 over 3 gets: nobody is below its share
        ((4, 1), 8, False),  # the first's share; the second claims the 3 free ones
        ((5, 1), 8, True),  # the second lacks 3, and 2 are free
        ((5, 3), 8, True),  # the second lacks 1: nothing is free
        ((1,), 8, False),  # one owner claiming what is free, one a round
    ],
)
def test_a_steal_is_expected_from_an_owner_above_its_share_while_others_lack_more_than_is_free(
    counts: tuple[int, ...], partitions: int, expected: bool
) -> None:
    assert steal_expected("a", held(*counts), partitions, NOW, EXPIRY) is expected


def test_released_and_expired_records_are_free_and_their_owners_not_counted() -> None:
    records = held(6, 1, free=1)
    assert owners(records, NOW, EXPIRY) == {"a": 6, "b": 1}
    assert steal_expected("a", records, 8, NOW, EXPIRY)  # share 4: b lacks 3, one is free
    stale = held(4, stale=4)  # z stopped renewing: its 4 are free, and it owns nothing
    assert owners(stale, NOW, EXPIRY) == {"a": 4}
    assert not steal_expected("a", stale, 8, NOW, EXPIRY)


def test_an_owner_not_in_the_records_counts_itself() -> None:
    # A worker that owns nothing yet shares with the one that owns everything: it is no thief of itself.
    assert not steal_expected("new", held(8), 8, NOW, EXPIRY)


def _sdk_claims(owner: str, records: list[Ownership], partitions: int, strategy: LoadBalancingStrategy) -> set[str]:
    """The partitions the SDK's own balancing round (``_balance_ownership``) claims for ``owner``."""
    client = SimpleNamespace(_address=SimpleNamespace(hostname="ns"), eventhub_name="hub")
    manager = OwnershipManager(client, "$Default", owner, None, EXPIRY, strategy, None)  # type: ignore[arg-type]
    listed: list[dict[str, Any]] = [
        {"partition_id": r.partition_id, "owner_id": r.owner_id, "last_modified_time": r.modified, "etag": "e"}
        for r in records
    ]
    claimed = manager._balance_ownership(listed, [str(p) for p in range(partitions)])
    return {str(record["partition_id"]) for record in claimed}


@given(
    counts=st.lists(st.integers(0, 9), min_size=1, max_size=6),
    free=st.integers(0, 4),
    stale=st.integers(0, 3),
    never=st.integers(0, 2),
    idle=st.integers(0, 3),
    strategy=st.sampled_from(list(LoadBalancingStrategy)),
)
def test_no_peer_steals_from_an_owner_for_whom_no_steal_is_expected(
    counts: list[int], free: int, stale: int, never: int, idle: int, strategy: LoadBalancingStrategy
) -> None:
    """The SDK's own balancing, run for every peer in the records and for every member of the roster
    that owns nothing: whenever one takes a partition of an owner, a steal from that owner was expected
    (a peer that has not come yet is what the settle time is for)."""
    records = held(*counts, free=free, stale=stale)
    partitions = len(records) + never  # and some never claimed
    by_owner = {o: {r.partition_id for r in records if r.owner_id == o} for o in owners(records, NOW, EXPIRY)}
    members = [Member(f"m{n}", f"idle{n}", NOW - 1) for n in range(idle)]
    members += [Member(f"o{owner}", owner, NOW - 1) for owner in by_owner]  # the owners attend too
    for thief in [*by_owner, *(m.owner_id for m in members[:idle])]:
        taken = _sdk_claims(thief, records, partitions, strategy) - by_owner.get(thief, set())
        for victim, owned in by_owner.items():
            if taken & owned:
                assert steal_expected(victim, records, partitions, NOW, EXPIRY, members), (thief, victim, counts)


def test_a_member_that_owns_nothing_is_counted_until_it_stops_attending() -> None:
    """Two owners of four partitions each, at their share; a third worker came and owns nothing (its
    claims went to the others): it takes from one of them at its next round, as the SDK's does."""
    records = held(4, 4)
    idle = Member("m", "c", NOW - 1)
    assert not steal_expected("a", records, 8, NOW, EXPIRY)
    assert steal_expected("a", records, 8, NOW, EXPIRY, [idle])
    assert _sdk_claims("c", records, 8, LoadBalancingStrategy.GREEDY)  # it takes one
    assert not steal_expected("a", records, 8, NOW, EXPIRY, [Member("m", "c", NOW - EXPIRY - 1)])  # gone
    assert not steal_expected("a", records, 8, NOW, EXPIRY, [Member("m", "a", NOW - 1)])  # a itself
    assert steal_expected("a", records, 8, NOW, EXPIRY, [Member("m", "", NOW - 1)])  # before its first claim


@pytest.mark.parametrize(
    ("age", "steal", "expected"),
    [
        (0.5, False, None),  # not yet the settle time
        (1.0, False, Release.SETTLED),
        (5.0, True, None),  # a steal is expected: hold on
        (61.0, True, Release.OUTHELD),  # but not past the ownership expiry
    ],
)
def test_a_partition_acts_after_the_settle_time_once_no_steal_is_expected(
    age: float, steal: bool, expected: Release | None
) -> None:
    assert release(age, 1.0, EXPIRY, steal=steal) is expected


def test_a_settle_time_of_zero_acts_at_once() -> None:
    assert release(0.0, 0.0, EXPIRY, steal=True) is Release.SETTLED


# --- the store that holds a claimed partition ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Peer:
    """One worker's balancing rounds through a store, as the SDK's client makes them: list, then
    claim what it keeps and what it takes."""

    def __init__(self, store: DirectoryCheckpointStore | SettlingStore, owner: str) -> None:
        self.store, self.owner = store, owner

    async def round(self, *, keep: set[str], take: frozenset[str] | set[str] = frozenset()) -> set[str]:
        """Renew what of ``keep`` the records still say is this owner's, and claim ``take``."""
        listed = {r["partition_id"]: r for r in await self.store.list_ownership("ns", "hub", "$Default")}
        kept = {p for p in keep if p in listed and listed[p]["owner_id"] == self.owner}
        asked = []
        for partition in sorted(kept | take):
            record = dict(listed.get(partition) or _new(partition))
            record["owner_id"] = self.owner
            asked.append(record)
        claimed = await self.store.claim_ownership(asked) if asked else []
        return {str(record["partition_id"]) for record in claimed}


def _new(partition: str) -> dict[str, Any]:
    return {
        "fully_qualified_namespace": "ns",
        "eventhub_name": "hub",
        "consumer_group": "$Default",
        "partition_id": partition,
    }


async def test_a_partition_claimed_alone_acts_at_the_first_round_after_the_settle_time(tmp_path: Path) -> None:
    clock = Clock()
    store = SettlingStore(DirectoryCheckpointStore(tmp_path), settle=1.0, expiry=EXPIRY, clock=clock)
    store.partition_count = 4
    a = Peer(store, "a")
    assert await a.round(keep=set(), take={"0", "1", "2", "3"}) == {"0", "1", "2", "3"}
    assert all(store.settling(p) for p in "0123")
    clock.now += 0.5
    await a.round(keep={"0", "1", "2", "3"})
    assert all(store.settling(p) for p in "0123")  # claimed half the settle time ago
    clock.now += 0.5
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await a.round(keep={"0", "1", "2", "3"})
    assert not any(store.settling(p) for p in "0123")
    async with asyncio.timeout(5):
        await store.settled("0")  # returns: it acts
    assert sorted(e["partition_id"] for e in logs if e["event"] == "partition.settled") == ["0", "1", "2", "3"]
    assert {e["why"] for e in logs} == {"settled"}


async def test_a_partition_taken_by_a_peer_starting_a_moment_later_never_acts_here(tmp_path: Path) -> None:
    """The first claimer takes all four; a peer takes one at its first round, and another at its second:
    the first holds while a steal from it is expected, and acts on the two it keeps once none is."""
    clock = Clock()
    plain = DirectoryCheckpointStore(tmp_path)
    store = SettlingStore(plain, settle=1.0, expiry=EXPIRY, clock=clock)
    store.partition_count = 4
    a, b = Peer(store, "a"), Peer(plain, "b")
    await a.round(keep=set(), take={"0", "1", "2", "3"})
    assert await b.round(keep=set(), take={"0"}) == {"0"}
    waiting = asyncio.create_task(store.settled("0"))
    clock.now += 1.0
    assert await a.round(keep={"0", "1", "2", "3"}) == {"1", "2", "3"}  # its claim of 0 fails: b has it
    assert all(store.settling(p) for p in "123")  # a owns 3, b 1: a steal is expected
    assert await b.round(keep={"0"}, take={"1"}) == {"0", "1"}
    clock.now += 1.0
    assert await a.round(keep={"1", "2", "3"}) == {"2", "3"}
    assert not store.settling("2")
    assert not store.settling("3")
    await asyncio.sleep(0)
    assert not waiting.done()  # lost before it settled: it never acts here (the SDK cancels it)
    waiting.cancel()


async def test_a_partition_holds_no_longer_than_the_ownership_expiry_past_the_settle_time(tmp_path: Path) -> None:
    clock = Clock()
    plain = DirectoryCheckpointStore(tmp_path)
    store = SettlingStore(plain, settle=1.0, expiry=EXPIRY, clock=clock)
    store.partition_count = 4
    a, b = Peer(store, "a"), Peer(plain, "b")
    await a.round(keep=set(), take={"0", "1", "2"})
    await b.round(keep=set(), take={"3"})  # b lacks one, and never takes it (a peer whose claims fail)
    for _ in range(3):
        clock.now += 30.0
        await b.round(keep={"3"})
        with capture_logs() as logs:
            await a.round(keep={"0", "1", "2"})
    assert not store.settling("0")
    assert [e["why"] for e in logs if e["event"] == "partition.settled"] == [Release.OUTHELD.value] * 3
    assert {e["log_level"] for e in logs} == {"warning"}


async def test_a_settle_time_of_zero_acts_at_the_claim(tmp_path: Path) -> None:
    store = SettlingStore(DirectoryCheckpointStore(tmp_path), settle=0.0, expiry=EXPIRY, clock=Clock())
    store.partition_count = 2
    with capture_logs() as logs:
        await Peer(store, "a").round(keep=set(), take={"0", "1"})
    assert not any(store.settling(p) for p in "01")
    assert logs == []


async def test_a_round_that_claims_nothing_loses_what_was_owned(tmp_path: Path) -> None:
    clock = Clock()
    plain = DirectoryCheckpointStore(tmp_path)
    store = SettlingStore(plain, settle=1.0, expiry=EXPIRY, clock=clock)
    store.partition_count = 1
    await Peer(store, "a").round(keep=set(), take={"0"})
    await Peer(plain, "b").round(keep={"0"})  # taken
    clock.now += 1.0
    await Peer(store, "a").round(keep=set())  # the SDK asks to claim nothing: no claim is made
    await store.list_ownership("ns", "hub", "$Default")  # the next round begins
    assert store.settling("0")


async def test_a_round_whose_claim_went_to_a_peer_holds_on_though_the_records_it_listed_show_no_peer(
    tmp_path: Path,
) -> None:
    """A peer's claim landing between this worker's listing and its claims: the listing shows no peer,
    but the claim that failed says there is one, and it takes more at its next round."""
    clock = Clock()
    plain = DirectoryCheckpointStore(tmp_path)
    store = SettlingStore(plain, settle=1.0, expiry=EXPIRY, clock=clock)
    store.partition_count = 4
    await Peer(store, "a").round(keep=set(), take={"0", "1", "2", "3"})
    clock.now += 1.0
    listed = list(await store.list_ownership("ns", "hub", "$Default"))  # a's round begins: alone
    await Peer(plain, "b").round(keep=set(), take={"0"})  # b steals one meanwhile
    for record in listed:
        record["owner_id"] = "a"
    claimed = await store.claim_ownership(listed)
    assert {record["partition_id"] for record in claimed} == {"1", "2", "3"}
    assert all(store.settling(p) for p in "123")
    clock.now += 1.0
    await Peer(plain, "b").round(keep={"0"}, take={"1"})
    await Peer(store, "a").round(keep={"1", "2", "3"})
    assert [store.settling(p) for p in "23"] == [False, False]  # balanced: 2 each


class Watched(DirectoryCheckpointStore):
    """A directory store that counts the listings of its ownership records, which fail once ``broken``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.broken = False
        self.lists = 0
        self._listing = asyncio.Condition()

    async def list_ownership(self, *args: Any, **kwargs: Any) -> Iterable[dict[str, Any]]:
        if self.broken:
            raise OSError("the disk is gone")
        found = await super().list_ownership(*args, **kwargs)
        async with self._listing:
            self.lists += 1
            self._listing.notify_all()
        return found

    async def listed(self, more: int) -> None:
        """Return once the records have been listed ``more`` times from now."""
        until = self.lists + more
        async with asyncio.timeout(5), self._listing:
            await self._listing.wait_for(lambda: self.lists >= until)


async def test_a_partition_taken_between_its_claim_and_its_opening_opens_only_once_claimed_back(
    tmp_path: Path,
) -> None:
    """The SDK opens a partition's receiver a while after the round that claimed it: one a peer took
    meanwhile waits, unopened, for the next round (which closes it, or claims it back)."""
    plain = Watched(tmp_path)
    store = SettlingStore(plain, settle=1.0, expiry=EXPIRY, clock=Clock())
    store.partition_count = 2
    a, b = Peer(store, "a"), Peer(plain, "b")
    await a.round(keep=set(), take={"0", "1"})
    async with asyncio.timeout(5):
        await store.opening("1")  # still a's
    await b.round(keep=set(), take={"0"})
    with capture_logs() as logs:
        checked = plain.listed(1)
        opening = asyncio.create_task(store.opening("0"))
        await checked
        await a.round(keep={"1"})  # a round that leaves it to b (the SDK cancels the partition then)
        await plain.listed(1)  # looked again at the round's end
        assert not opening.done()
        await a.round(keep={"1"}, take={"0"})  # taken back
        async with asyncio.timeout(5):
            await opening
    assert [e["event"] for e in logs] == ["partition.taken_before_open"]


async def test_a_partition_whose_owner_cannot_be_read_opens_with_a_warning(tmp_path: Path) -> None:
    plain = Watched(tmp_path)
    store = SettlingStore(plain, settle=1.0, expiry=EXPIRY, clock=Clock())
    store.partition_count = 1
    await Peer(store, "a").round(keep=set(), take={"0"})
    plain.broken = True
    with capture_logs() as logs:
        async with asyncio.timeout(5):
            await store.opening("0")
    assert [(e["event"], e["error"]) for e in logs] == [("partition.owner_unread", "the disk is gone")]
