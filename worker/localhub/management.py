"""The management node (``$management``) and the token node (``$cbs``): requests in, replies out. Pure.

The SDK asks ``READ`` of ``com.microsoft:eventhub`` (hub properties) and ``com.microsoft:partition``
(partition properties); it reads ``statusDescription`` as well as ``status-description``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from worker.localhub.store import HubStore


@dataclass(frozen=True, slots=True)
class Timestamp:
    """An AMQP timestamp (epoch milliseconds) in a reply body."""

    millis: int


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    description: str
    body: Mapping[str, object] | None = None


#: Any token is accepted: the local hub does no authorization.
TOKEN_ACCEPTED: Final = Reply(202, "Accepted")


def read(properties: Mapping[object, object], store_of: Callable[[str], HubStore | None]) -> Reply:
    """The reply to a management request with these application properties."""
    if properties.get("operation") != "READ":
        return Reply(400, f"unsupported operation {properties.get('operation')!r}")
    name = str(properties.get("name", ""))
    store = store_of(name)
    if store is None:
        return Reply(404, f"the messaging entity {name!r} could not be found")
    if properties.get("type") == "com.microsoft:eventhub":
        return Reply(
            200,
            "OK",
            {
                "name": store.spec.name,
                "type": "com.microsoft:eventhub",
                "created_at": Timestamp(store.created_at),
                "partition_count": store.spec.partitions,
                "partition_ids": list(store.spec.partition_ids),
            },
        )
    partition = str(properties.get("partition", ""))
    partition_log = store.logs.get(partition)
    if partition_log is None:
        return Reply(404, f"partition {partition!r} of {store.spec.name!r} does not exist")
    info = partition_log.info()
    return Reply(
        200,
        "OK",
        {
            "name": store.spec.name,
            "type": "com.microsoft:partition",
            "partition": partition,
            "begin_sequence_number": info.begin_sequence_number,
            "last_enqueued_sequence_number": info.last_sequence_number,
            "last_enqueued_offset": str(info.last_offset),
            "last_enqueued_time_utc": Timestamp(info.last_enqueued_time),
            "is_partition_empty": info.is_empty,
        },
    )
