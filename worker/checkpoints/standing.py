"""Where a consumer group stands, partition by partition, and where a reset moves its checkpoints.

``checkpoints show`` and ``checkpoints reset`` read the checkpoint store and the hub
(:mod:`worker.admin.checkpoints`) into the records here; everything decided from them is decided here:
the lag, whether a claim is live, the table and the JSON document, where a reset moves each
checkpoint, and why a reset is refused. Pure: the time comes in as an argument.

A checkpoint says where the SDK resumes: after its ``offset`` (exclusive; ``-1`` is the start of the
partition), and KEDA counts the lag from its ``sequencenumber`` (the last enqueued sequence number
minus it). So a reset to the start of a partition records the offset ``-1`` and the sequence number
before the first event the partition holds, which makes KEDA's lag the whole partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from worker.moments import format_duration

#: The offset the SDK and the service read as the start of a partition.
START_OFFSET = "-1"


@dataclass(frozen=True, slots=True)
class Stored:
    """A checkpoint as stored: the SDK resumes after ``offset``; KEDA counts lag from ``sequence_number``."""

    offset: str
    sequence_number: int
    #: When it was written (the blob's or the file's last modification), when known.
    written: datetime | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A partition's ownership record: who claimed it, and when it was last claimed or renewed."""

    #: Empty when the owner released it (the SDK does so on a clean stop).
    owner_id: str
    claimed: datetime | None


@dataclass(frozen=True, slots=True)
class PartitionEnd:
    """What the hub says of a partition (``get_partition_properties``)."""

    partition_id: str
    begin_sequence_number: int
    last_sequence_number: int
    last_offset: str
    #: None when the partition holds no event.
    last_enqueued: datetime | None
    empty: bool

    @classmethod
    def of(cls, properties: Mapping[str, Any]) -> PartitionEnd:
        """From the SDK's ``get_partition_properties``."""
        empty = bool(properties["is_empty"])
        return cls(
            partition_id=str(properties["id"]),
            begin_sequence_number=int(properties["beginning_sequence_number"]),
            last_sequence_number=int(properties["last_enqueued_sequence_number"]),
            last_offset=str(properties["last_enqueued_offset"]),
            last_enqueued=None if empty else properties["last_enqueued_time_utc"],
            empty=empty,
        )


@dataclass(frozen=True, slots=True)
class Standing:
    """One partition of a consumer group: the hub's end of it, the group's checkpoint and claim."""

    end: PartitionEnd
    checkpoint: Stored | None
    claim: Claim | None

    @property
    def partition_id(self) -> str:
        return self.end.partition_id


ClaimState = Literal["live", "expired", "released", "none"]


def claim_state(claim: Claim | None, now: datetime, expiry: float) -> ClaimState:
    """``live`` while the claim is younger than ``expiry`` seconds (the SDK's own test), else
    ``expired``; ``released`` when its owner let it go; ``none`` when the partition was never claimed."""
    if claim is None:
        return "none"
    if not claim.owner_id:
        return "released"
    if claim.claimed is None or claim.claimed + timedelta(seconds=expiry) <= now:
        return "expired"
    return "live"


def lag(standing: Standing) -> int:
    """Events beyond the checkpoint: the last enqueued sequence number minus the checkpoint's (KEDA's
    count); without a checkpoint, every event the partition holds."""
    end = standing.end
    if standing.checkpoint is None:
        return 0 if end.empty else end.last_sequence_number - end.begin_sequence_number + 1
    return max(0, end.last_sequence_number - standing.checkpoint.sequence_number)


# --- checkpoints show ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One partition as ``checkpoints show`` reports it (``--json`` prints these fields)."""

    partition_id: str
    checkpoint_sequence_number: int | None
    checkpoint_offset: str | None
    checkpoint_written: datetime | None
    last_enqueued_sequence_number: int | None
    last_enqueued_time: datetime | None
    lag: int
    #: True when there is no checkpoint: the lag is then the whole partition.
    lag_is_whole_partition: bool
    owner_id: str | None
    claim: ClaimState
    claim_age_seconds: float | None


def rows(standings: Iterable[Standing], now: datetime, expiry: float) -> list[Row]:
    """The rows of ``checkpoints show``, in partition order."""
    out = []
    for standing in sorted(standings, key=lambda s: _partition_order(s.partition_id)):
        checkpoint, end, claim = standing.checkpoint, standing.end, standing.claim
        age = None
        if claim is not None and claim.claimed is not None:
            age = max(0.0, (now - claim.claimed).total_seconds())
        out.append(
            Row(
                partition_id=standing.partition_id,
                checkpoint_sequence_number=checkpoint.sequence_number if checkpoint else None,
                checkpoint_offset=checkpoint.offset if checkpoint else None,
                checkpoint_written=checkpoint.written if checkpoint else None,
                last_enqueued_sequence_number=None if end.empty else end.last_sequence_number,
                last_enqueued_time=None if end.empty else end.last_enqueued,
                lag=lag(standing),
                lag_is_whole_partition=checkpoint is None,
                owner_id=claim.owner_id or None if claim is not None else None,
                claim=claim_state(claim, now, expiry),
                claim_age_seconds=age,
            )
        )
    return out


_HEADERS = ("PARTITION", "CHECKPOINT", "OFFSET", "WRITTEN", "LAST-ENQUEUED", "ENQUEUED-AT", "LAG", "OWNER", "CLAIM")


def table(found: Sequence[Row]) -> list[str]:
    """The rows as aligned columns, a header first, and a note when a partition has no checkpoint."""
    cells = [_HEADERS]
    cells += [
        (
            row.partition_id,
            _text(row.checkpoint_sequence_number),
            _text(row.checkpoint_offset),
            _time(row.checkpoint_written),
            _text(row.last_enqueued_sequence_number),
            _time(row.last_enqueued_time),
            f"{row.lag}*" if row.lag_is_whole_partition else str(row.lag),
            row.owner_id or "-",
            _claim(row),
        )
        for row in found
    ]
    widths = [max(len(line[column]) for line in cells) for column in range(len(_HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in cells]
    if any(row.lag_is_whole_partition for row in found):
        lines.append("* no checkpoint: the lag is every event the partition holds")
    return lines


def document(namespace: str, eventhub: str, consumer_group: str, expiry: float, found: Sequence[Row]) -> bytes:
    """The JSON document of ``checkpoints show --json``: the group, and a row per partition."""
    return orjson.dumps(
        {
            "namespace": namespace,
            "eventhub": eventhub,
            "consumer_group": consumer_group,
            "ownership_expiry_seconds": expiry,
            "partitions": list(found),
        },
        option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z,
    )


def _claim(row: Row) -> str:
    if row.claim in ("live", "expired") and row.claim_age_seconds is not None:
        return f"{row.claim} ({_age(row.claim_age_seconds)} old)"
    return "-" if row.claim == "none" else row.claim


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(seconds: float) -> str:
    return format_duration(timedelta(seconds=round(seconds)))


def _partition_order(partition_id: str) -> tuple[int, str]:
    return (int(partition_id), "") if partition_id.isdigit() else (1 << 62, partition_id)


# --- checkpoints reset -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Where a reset puts a checkpoint, and what that position is, in words."""

    offset: str
    sequence_number: int
    meaning: str


@dataclass(frozen=True, slots=True)
class Move:
    """One partition's checkpoint, from what it holds to its target."""

    partition_id: str
    before: Stored | None
    after: Target

    def __str__(self) -> str:
        before = self.before
        was = "no checkpoint" if before is None else f"{before.sequence_number} (offset {before.offset})"
        to = f"{self.after.sequence_number} (offset {self.after.offset}: {self.after.meaning})"
        return f"partition {self.partition_id}: {was} -> {to}"


def earliest(end: PartitionEnd) -> Target:
    """The start of the partition: the SDK reads from its first event; the lag is the whole partition."""
    return Target(START_OFFSET, end.begin_sequence_number - 1, "the start of the partition")


def latest(end: PartitionEnd) -> Target:
    """After the last enqueued event: only events enqueued from now on are read."""
    if end.last_sequence_number < 0:
        return Target(START_OFFSET, -1, "the start of the partition, which never held an event")
    return Target(end.last_offset, end.last_sequence_number, "after the last enqueued event")


def at_time(end: PartitionEnd, moment: datetime, first: int | None, before: Stored | None) -> Target:
    """Just before the first event enqueued at or after ``moment``.

    ``first`` is that event's sequence number, as read from the hub (None: no event was enqueued at
    or after ``moment``, so the position is after the last one); ``before`` is the event that precedes
    it, as read from the hub (None: none does, so the position is the start of the partition).
    """
    when = moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if first is None:
        last = latest(end)
        return Target(last.offset, last.sequence_number, f"{last.meaning}: none was enqueued at or after {when}")
    if before is None or before.sequence_number != first - 1:
        return Target(START_OFFSET, first - 1, f"the start of the partition: none of its events is from before {when}")
    return Target(before.offset, before.sequence_number, f"before the first event enqueued at or after {when}")


def refusals(standings: Iterable[Standing], now: datetime, expiry: float) -> list[str]:
    """One line per partition a worker holds (a live claim): a reset would race its checkpoints."""
    out = []
    for standing in sorted(standings, key=lambda s: _partition_order(s.partition_id)):
        claim = standing.claim
        if claim is None or claim.claimed is None or claim_state(claim, now, expiry) != "live":
            continue
        age = _age(max(0.0, (now - claim.claimed).total_seconds()))
        out.append(
            f"partition {standing.partition_id} is held by {claim.owner_id} (claimed {age} ago; a claim lives "
            f"{_age(expiry)} unless renewed)"
        )
    return out


def unknown_partitions(asked: Iterable[str], partition_ids: Iterable[str]) -> list[str]:
    """The partitions asked for that the hub does not have."""
    known = set(partition_ids)
    return sorted({partition for partition in asked if partition not in known}, key=_partition_order)
