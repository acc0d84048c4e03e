"""Who a consumer group is for: workers that act, or shadow runs (``run --dry-run``) that only count.

A shadow run must never take partitions from, or move the checkpoints of, the workers that act, so
the two never share a consumer group. Each worker marks its group at start-up with what it is for
(the first mark stays; see :meth:`worker.checkpoints.store.Checkpoints.mark`), and refuses to run in a
group marked for the other use. A group with checkpoints but no mark was used by acting workers
(from before marks). Pure: the decision only.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class ConsumerGroupUse(enum.StrEnum):
    ACTING = "acting"
    SHADOW = "shadow"


class ConsumerGroupMark(NamedTuple):
    """The mark a consumer group holds: its use, and when it was marked (ISO 8601)."""

    use: ConsumerGroupUse
    since: str


def refusal(wanted: ConsumerGroupUse, found: ConsumerGroupMark | None, consumer_group: str) -> str | None:
    """Why a worker for ``wanted`` must not run in ``consumer_group`` marked ``found``; None when it may."""
    if found is None or found.use is wanted:
        return None
    if wanted is ConsumerGroupUse.SHADOW:
        return (
            f"consumer group {consumer_group!r} belongs to workers that act (marked {found.since}): a dry run "
            "would take partitions from them and move their checkpoints. Give the dry run a consumer group of its "
            "own (WORKER_CONSUMER_GROUP / --consumer-group; create one with `az eventhubs eventhub consumer-group "
            "create`)"
        )
    return (
        f"consumer group {consumer_group!r} belongs to dry runs (marked {found.since}): workers that act need a "
        "consumer group of their own (WORKER_CONSUMER_GROUP / --consumer-group), or start them with --dry-run"
    )


def unmarked_use(has_checkpoints: bool) -> ConsumerGroupUse | None:
    """The use of a group without a mark: acting, if it has checkpoints (written before marks existed)."""
    return ConsumerGroupUse.ACTING if has_checkpoints else None
