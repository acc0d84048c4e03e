"""How the SDK's load balancing moves partitions between the workers of a consumer group. Pure.

Read from the ownership records: whether a peer is expected to take a partition from a worker, and
when a partition just claimed has held long enough to act on what it reads. The time comes in.

Each worker's consumer client runs a balancing round every load balancing interval: it lists the
ownership records, counts the active owners (a record renewed within the ownership expiry, with an
owner) with itself among them, and claims partitions nobody holds (greedy: up to its share at once;
balanced: one a round). Only when none is free, and it owns fewer than ``partitions // owners``, does
it take one from the owner that owns the most: a steal. So an owner above that share is stolen from
while some owner is below it and the partitions free to claim cannot make up the difference.

A peer that owns nothing is in no ownership record: one that has not claimed yet, one whose claims
all went to others a moment before, one whose partitions were all taken. The first claimer of a hub
nobody has claimed sees no one else, and its peers, starting a moment later, take their shares from
it. Each worker's attendance (:class:`Member`) counts the peers that own nothing but have come; a
peer still starting has not. So a partition just claimed holds what it reads until its claim has
lasted ``settle`` seconds (by then, a peer started at the same moment has come) and no steal from
its owner is expected (:func:`release`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Ownership:
    """One partition's ownership record, as the checkpoint store lists it."""

    partition_id: str
    #: Empty when released (the SDK releases its partitions on a clean stop).
    owner_id: str
    #: When it was last claimed or renewed: seconds since the epoch.
    modified: float


@dataclass(frozen=True, slots=True)
class Member:
    """A worker's attendance in its consumer group (:mod:`worker.checkpoints.members`)."""

    member_id: str
    #: The owner id its claims carry ("" before its first claim).
    owner_id: str
    #: When it last attended: seconds since the epoch.
    modified: float


def owners(records: Iterable[Ownership], now: float, expiry: float) -> Counter[str]:
    """Each active owner's partitions: records with an owner, renewed within ``expiry`` seconds."""
    return Counter(r.owner_id for r in records if r.owner_id and r.modified + expiry >= now)


def steal_expected(
    owner_id: str,
    records: Iterable[Ownership],
    partitions: int,
    now: float,
    expiry: float,
    members: Iterable[Member] = (),
) -> bool:
    """Whether a peer balancing as the SDK does is expected to take a partition from ``owner_id``.

    ``owner_id`` owns more than its share (``partitions // owners``, itself counted), and the owners
    below the share lack more partitions than are free to claim. Conservative: it says so even when
    another owner, owning more still, is the one the steals go to first. A member that attended within
    ``expiry`` and owns nothing takes its share at its next round, counting the owners and itself: a
    steal is expected when one would be with it among the owners.
    """
    counts = owners(records, now, expiry)
    if _steal_expected(owner_id, counts, partitions):
        return True
    for member in members:
        peer = member.owner_id or f"member {member.member_id}"
        if member.modified + expiry < now or peer == owner_id or peer in counts:
            continue
        with_peer = Counter(counts)
        with_peer[peer] = 0
        if _steal_expected(owner_id, with_peer, partitions):
            return True
    return False


def _steal_expected(owner_id: str, counts: Counter[str], partitions: int) -> bool:
    share = partitions // (len(counts) + (owner_id not in counts))
    if counts[owner_id] <= share:
        return False
    lacking = sum(share - count for owner, count in counts.items() if owner != owner_id and count < share)
    free = partitions - sum(counts.values())
    return lacking > free


class Release(StrEnum):
    """Why a partition held since its claim may act."""

    #: Held ``settle`` seconds, and no steal is expected.
    SETTLED = "settled"
    #: A steal was still expected after ``settle`` seconds and the ownership expiry: acting anyway,
    #: rather than hold a partition on a balance that does not come.
    OUTHELD = "held_past_the_ownership_expiry"


def release(held: float, settle: float, expiry: float, *, steal: bool) -> Release | None:
    """Whether a partition claimed ``held`` seconds ago acts now; None: it holds on. A ``settle`` of 0
    acts at once."""
    if settle <= 0:
        return Release.SETTLED
    if held < settle:
        return None
    if not steal:
        return Release.SETTLED
    return Release.OUTHELD if held >= settle + expiry else None
