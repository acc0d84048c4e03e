"""The management node (``$management``) and the token node (``$cbs``): requests in, replies out. Pure.

The SDK asks ``READ`` of ``com.microsoft:eventhub`` (hub properties) and ``com.microsoft:partition``
(partition properties), with its token in the ``security_token`` property; it reads
``statusDescription`` as well as ``status-description``. It puts a token on ``$cbs`` for each
audience before attaching links; 401 there or here becomes the SDK's AuthenticationError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from worker.localhub import authorization
from worker.localhub.addresses import path_of
from worker.localhub.authorization import Grant
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


TOKEN_ACCEPTED: Final = Reply(202, "Accepted")
PUT_OPERATION: Final = "put-token"
SECURITY_PROPERTY: Final = "security_token"


def put_token(
    properties: Mapping[object, object],
    body: object,
    keys: Mapping[str, str],
    now: float,
    store_of: Callable[[str], HubStore | None],
) -> tuple[Reply, Grant | None]:
    """The reply to a request on ``$cbs``, and what it grants (None when refused); ``now`` in epoch seconds.

    A valid token for an event hub the namespace does not have is refused with 404, as the service
    does (the SDK raises its AuthenticationError, a ConnectError); a namespace's token is not.
    """
    if properties.get("operation") != PUT_OPERATION:
        return Reply(400, f"unsupported operation {properties.get('operation')!r} on the token node"), None
    audience = properties.get("name")
    if not isinstance(audience, str) or not audience:
        return Reply(400, "the put-token names no audience (application property 'name')"), None
    refused = authorization.refuse_token_type(_text(properties.get("type")))
    if refused is not None:
        return Reply(401, refused.description), None
    verdict = authorization.verify(_text(body), audience, keys, now)
    if isinstance(verdict, authorization.Refusal):
        return Reply(401, verdict.description), None
    hub = path_of(audience).split("/", 1)[0]
    if hub and store_of(hub) is None:
        return Reply(404, f"The messaging entity {audience!r} could not be found."), None
    return TOKEN_ACCEPTED, verdict


def refuse_read(properties: Mapping[object, object], keys: Mapping[str, str], now: float) -> Reply | None:
    """401 when a management request's ``security_token`` is absent or does not grant the hub it names."""
    token = properties.get(SECURITY_PROPERTY)
    if token is None:
        return Reply(401, f"Unauthorized: the management request carries no {SECURITY_PROPERTY!r}")
    verdict = authorization.verify(_text(token), str(properties.get("name", "")), keys, now)
    return Reply(401, verdict.description) if isinstance(verdict, authorization.Refusal) else None


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


def _text(value: object) -> str:
    """A property or body as text: the SDK sends strings, some clients bytes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""
