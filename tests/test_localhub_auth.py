"""Authorization in the local hub, through the real SDK (sync and async clients): tokens are checked as
the service checks them, and a refusal reaches the client as the SDK's own AuthenticationError, with
the hub's reason in its message."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken, AzureNamedKeyCredential, AzureSasCredential
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub._pyamqp import SendClient
from azure.eventhub._pyamqp.aio import ReceiveClientAsync, SendClientAsync
from azure.eventhub._pyamqp.aio._authentication_async import SASTokenAuthAsync
from azure.eventhub._pyamqp.authentication import SASTokenAuth
from azure.eventhub._pyamqp.error import AMQPLinkError, ErrorCondition
from azure.eventhub._pyamqp.message import Message
from azure.eventhub._pyamqp.utils import generate_sas_token
from azure.eventhub.aio import EventHubConsumerClient as AsyncConsumer
from azure.eventhub.aio import EventHubProducerClient as AsyncProducer
from azure.eventhub.exceptions import AuthenticationError, ConnectError

from tests.hubclient import FAST, LOOP, last_sequence_number, send
from tests.servers import HUB_NAME, HubServer, start_localhub, stop
from worker.localhub.authorization import DEVELOPMENT_KEY, DEVELOPMENT_KEY_NAME

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sdk_garbage")]

#: A key of the right shape that is not the hub's.
OTHER_KEY = "a2V5LW9mLWFub3RoZXItbmFtZXNwYWNlLTMyLWJ5dGU="


def namespace(localhub: HubServer) -> str:
    return f"127.0.0.1:{localhub.port}"


def sas(resource: str, *, key_name: str = DEVELOPMENT_KEY_NAME, key: str = DEVELOPMENT_KEY, ttl: int = 600) -> str:
    """A token made by the SDK's own generator, valid for ``ttl`` seconds (negative: expired that long ago)."""
    return str(generate_sas_token(resource, key_name, key, int(time.time()) + ttl))  # type: ignore[no-untyped-call]


def with_key(localhub: HubServer, *, key_name: str = DEVELOPMENT_KEY_NAME, key: str = DEVELOPMENT_KEY) -> str:
    """The hub's printed connection string with another key name or key."""
    printed = localhub.connection_string
    assert f"SharedAccessKeyName={DEVELOPMENT_KEY_NAME};SharedAccessKey={DEVELOPMENT_KEY};" in printed
    return printed.replace(
        f"SharedAccessKeyName={DEVELOPMENT_KEY_NAME};SharedAccessKey={DEVELOPMENT_KEY};",
        f"SharedAccessKeyName={key_name};SharedAccessKey={key};",
    )


class EntraToken:
    """A token credential as azure-identity's are (the SDK sends what it returns as a JWT)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2V2ZW50aHVicy5henVyZS5uZXQifQ.c2ln", 2**31)


class AsyncEntraToken:
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return EntraToken().get_token(*scopes)

    async def close(self) -> None:
        return None


# Through the SDK's clients -----------------------------------------------------------------------------


def clients(localhub: HubServer, credential: Any) -> dict[str, Any]:
    """Producer and consumer construction arguments for a credential (the connection string's path does
    the same for a key: ``UseDevelopmentEmulator`` means ``use_tls=False``)."""
    return {
        "fully_qualified_namespace": namespace(localhub),
        "eventhub_name": HUB_NAME,
        "credential": credential,
        "use_tls": False,
        **FAST,
    }


async def round_trip(producer: AsyncProducer, consumer: AsyncConsumer, start: int) -> list[str]:
    """Hub properties, a send to partition 0 and a receive of it from ``start``, through these clients."""
    mark = f"auth-{uuid.uuid4().hex[:8]}"
    async with producer:
        assert (await producer.get_eventhub_properties())["eventhub_name"] == HUB_NAME
        await producer.send_batch([EventData(mark)], partition_id="0")
    got: list[str] = []
    errors: list[Exception] = []
    done = asyncio.Event()

    async def on_event(_context: Any, event: EventData | None) -> None:
        if event is not None:
            got.append(event.body_as_str())
            if event.body_as_str() == mark:
                done.set()

    async def on_error(_context: Any, error: Exception) -> None:
        errors.append(error)
        done.set()

    async with consumer:
        task = asyncio.create_task(
            consumer.receive(on_event, on_error=on_error, partition_id="0", starting_position=start)
        )
        try:
            await asyncio.wait_for(done.wait(), 20)
        finally:
            await consumer.close()
            await task
    assert errors == []
    assert got[-1] == mark
    return got


async def refusals(producer: AsyncProducer, consumer: AsyncConsumer) -> list[AuthenticationError]:
    """The errors of get_eventhub_properties, send and receive through these clients: each must be the SDK's
    AuthenticationError."""
    errors: list[Exception] = []
    async with producer:
        with pytest.raises(AuthenticationError) as properties:
            await producer.get_eventhub_properties()
        with pytest.raises(AuthenticationError) as send:
            await producer.send_batch([EventData("refused")], partition_id="0")
    failed = asyncio.Event()

    async def on_error(_context: Any, error: Exception) -> None:
        errors.append(error)
        failed.set()

    async with consumer:
        task = asyncio.create_task(consumer.receive(lambda *_: asyncio.sleep(0), on_error=on_error, partition_id="0"))
        try:
            await asyncio.wait_for(failed.wait(), 20)
        finally:
            await consumer.close()
            await task
    assert isinstance(errors[0], AuthenticationError), errors[0]
    return [properties.value, send.value, errors[0]]


def receive_sync(
    consumer: EventHubConsumerClient, mark: str | None = None, start: int = -1
) -> tuple[list[str], list[Exception]]:
    """Receive partition 1 after ``start`` with the sync client, until ``mark`` arrives or an error."""
    got: list[str] = []
    errors: list[Exception] = []
    done = threading.Event()

    def on_event(_context: Any, event: EventData | None) -> None:
        if event is not None:
            got.append(event.body_as_str())
            if got[-1] == mark:
                done.set()

    def on_error(_context: Any, error: Exception) -> None:
        errors.append(error)
        done.set()

    options = {"on_error": on_error, "partition_id": "1", "starting_position": start}
    receiving = threading.Thread(target=consumer.receive, args=(on_event,), kwargs=options)
    receiving.start()
    try:
        assert done.wait(20)
    finally:
        consumer.close()
        receiving.join(20)
    return got, errors


async def test_the_printed_connection_string_carries_the_development_key(localhub: HubServer) -> None:
    assert (
        f"SharedAccessKeyName={DEVELOPMENT_KEY_NAME};SharedAccessKey={DEVELOPMENT_KEY};" in localhub.connection_string
    )
    cs = localhub.connection_string
    start = await last_sequence_number(cs, "0")
    await round_trip(
        AsyncProducer.from_connection_string(cs),
        AsyncConsumer.from_connection_string(cs, "$Default", **LOOP),
        start,
    )


@pytest.mark.parametrize(
    ("key_name", "key", "reason"),
    [
        (DEVELOPMENT_KEY_NAME, OTHER_KEY, "InvalidSignature: the token's signature does not match key"),
        ("listen-only", DEVELOPMENT_KEY, "InvalidSignature: the shared access key name 'listen-only' is not one of"),
    ],
    ids=["wrong-key", "wrong-key-name"],
)
async def test_a_wrong_key_is_refused_async(localhub: HubServer, key_name: str, key: str, reason: str) -> None:
    cs = with_key(localhub, key_name=key_name, key=key)
    errors = await refusals(
        AsyncProducer.from_connection_string(cs, **FAST),
        AsyncConsumer.from_connection_string(cs, "$Default", **FAST, **LOOP),
    )
    for error in errors:
        assert "Status code: 401" in str(error)
        assert reason in str(error)


@pytest.mark.parametrize(
    ("key_name", "key", "reason"),
    [
        (DEVELOPMENT_KEY_NAME, OTHER_KEY, "InvalidSignature: the token's signature does not match key"),
        ("listen-only", DEVELOPMENT_KEY, "InvalidSignature: the shared access key name 'listen-only' is not one of"),
    ],
    ids=["wrong-key", "wrong-key-name"],
)
def test_a_wrong_key_is_refused_sync(localhub: HubServer, key_name: str, key: str, reason: str) -> None:
    cs = with_key(localhub, key_name=key_name, key=key)
    with EventHubProducerClient.from_connection_string(cs, **FAST) as producer:
        with pytest.raises(AuthenticationError, match=reason):
            producer.get_eventhub_properties()
        with pytest.raises(AuthenticationError, match=reason):
            producer.send_batch([EventData("refused")], partition_id="0")
    _, errors = receive_sync(EventHubConsumerClient.from_connection_string(cs, "$Default", **FAST, **LOOP))
    assert isinstance(errors[0], AuthenticationError)
    assert reason in str(errors[0])


async def test_an_expired_sas_credential_is_refused(localhub: HubServer) -> None:
    token = sas(f"sb://{namespace(localhub)}/{HUB_NAME}", ttl=-60)
    credential = AzureSasCredential(token)
    errors = await refusals(
        AsyncProducer(**clients(localhub, credential)),
        AsyncConsumer(consumer_group="$Default", **clients(localhub, credential), **LOOP),
    )
    for error in errors:
        assert "ExpiredToken: the token expired at " in str(error)


async def test_a_token_for_another_hub_is_refused(localhub: HubServer) -> None:
    credential = AzureSasCredential(sas(f"sb://{namespace(localhub)}/another-hub"))
    errors = await refusals(
        AsyncProducer(**clients(localhub, credential)),
        AsyncConsumer(consumer_group="$Default", **clients(localhub, credential), **LOOP),
    )
    for error in errors:
        assert "InvalidAudience: the token's resource 'sb://" in str(error)
        assert "/another-hub' does not cover the audience" in str(error)


async def test_a_valid_token_for_a_hub_the_namespace_lacks_is_refused_with_404(localhub: HubServer) -> None:
    # As the service: the token node answers 404, which the SDK raises as its AuthenticationError (a ConnectError).
    cs = localhub.connection_string.replace(f"EntityPath={HUB_NAME}", "EntityPath=no-such-hub")
    errors = await refusals(
        AsyncProducer.from_connection_string(cs, **FAST),
        AsyncConsumer.from_connection_string(cs, "$Default", **FAST, **LOOP),
    )
    for error in errors:
        assert "Status code: 404" in str(error)
        assert "no-such-hub' could not be found" in str(error)
    sync_producer = EventHubProducerClient.from_connection_string(cs, **FAST)  # the sync client, too
    with sync_producer, pytest.raises(ConnectError, match="no-such-hub' could not be found"):
        sync_producer.create_batch(partition_id="0")


async def test_an_entra_id_token_is_refused(localhub: HubServer) -> None:
    with pytest.raises(AuthenticationError, match="the local hub has no Microsoft Entra ID"):
        async with AsyncProducer(**clients(localhub, AsyncEntraToken())) as producer:
            await producer.get_eventhub_properties()


@pytest.mark.parametrize("scope", ["hub", "namespace", "namespace-without-port"])
async def test_valid_sas_credentials_work(localhub: HubServer, scope: str) -> None:
    resource = {
        "hub": f"sb://{namespace(localhub)}/{HUB_NAME}",
        "namespace": f"sb://{namespace(localhub)}/",
        "namespace-without-port": "sb://127.0.0.1/",
    }[scope]
    credential = AzureSasCredential(sas(resource))
    start = await last_sequence_number(localhub.connection_string, "0")
    await round_trip(
        AsyncProducer(**clients(localhub, credential)),
        AsyncConsumer(consumer_group="$Default", **clients(localhub, credential), **LOOP),
        start,
    )


async def test_a_named_key_credential_works(localhub: HubServer) -> None:
    credential = AzureNamedKeyCredential(DEVELOPMENT_KEY_NAME, DEVELOPMENT_KEY)
    start = await last_sequence_number(localhub.connection_string, "0")
    await round_trip(
        AsyncProducer(**clients(localhub, credential)),
        AsyncConsumer(consumer_group="$Default", **clients(localhub, credential), **LOOP),
        start,
    )


def test_sas_and_named_key_credentials_work_sync(localhub: HubServer) -> None:
    for credential in (
        AzureNamedKeyCredential(DEVELOPMENT_KEY_NAME, DEVELOPMENT_KEY),
        AzureSasCredential(sas(f"sb://{namespace(localhub)}/")),
    ):
        mark = f"auth-sync-{uuid.uuid4().hex[:8]}"
        with EventHubProducerClient(**clients(localhub, credential)) as producer:
            assert producer.get_eventhub_properties()["eventhub_name"] == HUB_NAME
            start = producer.get_partition_properties("1")["last_enqueued_sequence_number"]
            producer.send_batch([EventData(mark)], partition_id="1")
        consumer = EventHubConsumerClient(consumer_group="$Default", **clients(localhub, credential), **LOOP)
        got, errors = receive_sync(consumer, mark, start)
        assert errors == []
        assert got == [mark]


# Links: a token grants only what its resource covers ---------------------------------------------------


def group_token_link(localhub: HubServer, group: str) -> tuple[str, str]:
    """The host, and the audience of a token for consumer group ``group`` only."""
    host = namespace(localhub)
    return host, f"sb://{host}/{HUB_NAME}/consumergroups/{group}"


async def test_a_receive_link_outside_the_tokens_resource_is_refused(localhub: HubServer) -> None:
    host, audit = group_token_link(localhub, "audit")
    source = f"amqp://{host}/{HUB_NAME}/ConsumerGroups/$Default/Partitions/0"
    auth = SASTokenAuthAsync(audit, audit, DEVELOPMENT_KEY_NAME, DEVELOPMENT_KEY)
    with pytest.raises(AMQPLinkError) as refused:
        async with ReceiveClientAsync(host, source, auth=auth, use_tls=False) as receiver:  # type: ignore[no-untyped-call]
            await receiver.receive_message_batch_async(max_batch_size=1, timeout=10)
    assert refused.value.condition == ErrorCondition.UnauthorizedAccess
    assert (
        refused.value.description
        == (
            f"Unauthorized access. 'Listen' claim(s) are required to perform this operation. Resource: '{source}'."
        ).encode()
    )
    # The same token reads its own consumer group (a link without a filter starts at the beginning).
    await send(localhub.connection_string, ["for audit"], partition_id="0")
    own = f"amqp://{host}/{HUB_NAME}/ConsumerGroups/audit/Partitions/0"
    auth = SASTokenAuthAsync(audit, audit, DEVELOPMENT_KEY_NAME, DEVELOPMENT_KEY)
    got: list[Message] = []
    async with ReceiveClientAsync(host, own, auth=auth, use_tls=False) as receiver:  # type: ignore[no-untyped-call]
        while not got:
            got += await receiver.receive_message_batch_async(max_batch_size=1, timeout=10)


async def test_a_send_link_outside_the_tokens_resource_is_refused(localhub: HubServer) -> None:
    host, audit = group_token_link(localhub, "audit")
    target = f"amqp://{host}/{HUB_NAME}"
    auth = SASTokenAuthAsync(audit, audit, DEVELOPMENT_KEY_NAME, DEVELOPMENT_KEY)
    with pytest.raises(AMQPLinkError) as refused:
        async with SendClientAsync(host, target, auth=auth, use_tls=False) as sender:  # type: ignore[no-untyped-call]
            await sender.send_message_async(Message(data=b"refused"))
    assert refused.value.condition == ErrorCondition.UnauthorizedAccess
    assert "'Send' claim(s) are required to perform this operation. Resource: 'amqp://" in str(refused.value)


def test_a_send_link_outside_the_tokens_resource_is_refused_sync(localhub: HubServer) -> None:
    host, audit = group_token_link(localhub, "audit")
    auth = SASTokenAuth(audit, audit, DEVELOPMENT_KEY_NAME, DEVELOPMENT_KEY)
    sender = SendClient(host, f"amqp://{host}/{HUB_NAME}", auth=auth, use_tls=False)  # type: ignore[no-untyped-call]
    with pytest.raises(AMQPLinkError) as refused, sender:
        sender.send_message(Message(data=b"refused"))
    assert refused.value.condition == ErrorCondition.UnauthorizedAccess


# The hub's own key ---------------------------------------------------------------------------------------


def test_the_command_takes_its_own_key(tmp_path: Path) -> None:
    key = "bXktb3duLWxvY2FsLWh1Yi1rZXktMzItYnl0ZXMtbG9uZw=="
    server = start_localhub(tmp_path, options=["--key-name", "mine", "--key", key])
    try:
        assert f"SharedAccessKeyName=mine;SharedAccessKey={key};EntityPath={HUB_NAME};" in server.connection_string
        with EventHubProducerClient.from_connection_string(server.connection_string) as producer:
            assert producer.get_eventhub_properties()["eventhub_name"] == HUB_NAME
            producer.send_batch([EventData("with my key")], partition_id="0")
        development = server.connection_string.replace(
            f"SharedAccessKeyName=mine;SharedAccessKey={key};",
            f"SharedAccessKeyName={DEVELOPMENT_KEY_NAME};SharedAccessKey={DEVELOPMENT_KEY};",
        )
        refused = pytest.raises(AuthenticationError, match=f"'{DEVELOPMENT_KEY_NAME}' is not one of this hub's keys")
        with EventHubProducerClient.from_connection_string(development, **FAST) as producer, refused:
            producer.get_eventhub_properties()
    finally:
        stop(server)
