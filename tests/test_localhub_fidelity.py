"""Where the local hub once differed from the service, through the real SDK (sync and async): a link
without a filter starts at the beginning of the partition; the sender's delivery annotations reach
consumers, runtime metrics or not."""

from __future__ import annotations

import uuid
from typing import cast

import pytest
from azure.eventhub import EventData, EventHubProducerClient, parse_connection_string
from azure.eventhub._pyamqp import ReceiveClient
from azure.eventhub._pyamqp.aio import ReceiveClientAsync
from azure.eventhub._pyamqp.aio._authentication_async import SASTokenAuthAsync
from azure.eventhub._pyamqp.authentication import SASTokenAuth
from azure.eventhub._pyamqp.message import Message
from azure.eventhub.aio import EventHubProducerClient as AsyncProducer
from azure.eventhub.amqp import AmqpAnnotatedMessage

from tests.hubclient import collect, last_sequence_number, send
from tests.servers import HUB_NAME, HubServer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sdk_garbage")]


def _plain_link(localhub: HubServer, partition: str) -> tuple[str, str, str, str, str]:
    """What a plain AMQP receive client needs: host, source address (no filter), audience, key name, key."""
    parts = parse_connection_string(localhub.connection_string)
    host = parts.fully_qualified_namespace
    source = f"amqp://{host}/{HUB_NAME}/ConsumerGroups/$Default/Partitions/{partition}"
    audience = f"sb://{host}/{HUB_NAME}"
    return host, source, audience, str(parts.shared_access_key_name), str(parts.shared_access_key)


def _bodies(messages: list[Message]) -> list[bytes]:
    return [b"".join(cast("list[bytes]", message.data or [])) for message in messages]


def _sequence_number(message: Message) -> object:
    return (message.message_annotations or {})[b"x-opt-sequence-number"]


def test_a_plain_receive_link_starts_at_the_beginning(localhub: HubServer) -> None:
    marks = [f"plain-{uuid.uuid4().hex[:8]}-{i}".encode() for i in range(3)]
    with EventHubProducerClient.from_connection_string(localhub.connection_string) as producer:
        producer.send_batch([EventData(m) for m in marks], partition_id="2")
        retained = producer.get_partition_properties("2")
    host, source, audience, key_name, key = _plain_link(localhub, "2")
    wanted = retained["last_enqueued_sequence_number"] - retained["beginning_sequence_number"] + 1
    receiver = ReceiveClient(  # type: ignore[no-untyped-call]
        host, source, auth=SASTokenAuth(audience, audience, key_name, key), use_tls=False, link_credit=wanted
    )
    got: list[Message] = []
    with receiver:
        while len(got) < wanted:
            got += receiver.receive_message_batch(max_batch_size=wanted, timeout=10)
    assert _sequence_number(got[0]) == retained["beginning_sequence_number"]
    assert _bodies(got)[-3:] == marks


async def test_a_plain_receive_link_starts_at_the_beginning_async(localhub: HubServer) -> None:
    marks = [f"plain-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    await send(localhub.connection_string, marks, partition_id="3")
    async with AsyncProducer.from_connection_string(localhub.connection_string) as producer:
        retained = await producer.get_partition_properties("3")
    host, source, audience, key_name, key = _plain_link(localhub, "3")
    wanted = retained["last_enqueued_sequence_number"] - retained["beginning_sequence_number"] + 1
    auth = SASTokenAuthAsync(audience, audience, key_name, key)
    got: list[Message] = []
    receiver_async = ReceiveClientAsync(host, source, auth=auth, use_tls=False, link_credit=wanted)  # type: ignore[no-untyped-call]
    async with receiver_async as receiver:
        while len(got) < wanted:
            got += await receiver.receive_message_batch_async(max_batch_size=wanted, timeout=10)
    assert _sequence_number(got[0]) == retained["beginning_sequence_number"]
    assert _bodies(got)[-3:] == [m.encode() for m in marks]


def _annotated(body: bytes) -> AmqpAnnotatedMessage:
    return AmqpAnnotatedMessage(
        data_body=[body],
        delivery_annotations={"delann_key": "delann_value"},
        annotations={"x-custom": "kept"},
        application_properties={"body_type": "data"},
    )


@pytest.mark.parametrize("runtime_metric", [False, True], ids=["plain", "runtime-metric"])
async def test_delivery_annotations_reach_consumers(localhub: HubServer, runtime_metric: bool) -> None:
    cs = localhub.connection_string
    start = await last_sequence_number(cs, "1")
    with EventHubProducerClient.from_connection_string(cs) as producer:  # the sync client
        producer.send_batch([_annotated(b"sync")], partition_id="1")
    async with AsyncProducer.from_connection_string(cs) as async_producer:
        await async_producer.send_event(_annotated(b"async"), partition_id="1")
    got = await collect(cs, "1", 2, starting_position=start, track_last_enqueued_event_properties=runtime_metric)
    assert [e.body_as_str() for e in got.events] == ["sync", "async"]
    for event in got.events:
        raw = event.raw_amqp_message
        assert raw.delivery_annotations is not None
        assert raw.delivery_annotations[b"delann_key"] == b"delann_value"
        assert raw.annotations is not None
        assert raw.annotations[b"x-custom"] == b"kept"
        assert raw.application_properties == {b"body_type": b"data"}
    last = got.last_enqueued[-1]
    assert last is not None  # the SDK reads them from any delivery annotations, runtime metrics or not
    assert last["sequence_number"] == (start + 2 if runtime_metric else None)
