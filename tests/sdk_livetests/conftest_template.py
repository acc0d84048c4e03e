"""Fixtures for the azure-eventhub SDK's own live tests (``tests/livetest`` of its source
distribution), pointed at a local hub instead of an Azure namespace.

This file replaces the SDK's ``tests/conftest.py`` in the unpacked distribution (see
:mod:`tests.sdk_livetests.suite`); the test files themselves are the SDK's, unchanged. Each test gets
its own event hub of two partitions, on a local hub started for it in a thread of the test process,
as the SDK's fixtures create an event hub per test. Plain AMQP with TLS off, as the development
emulator flag asks, and AMQP over WebSocket on the same port.

What the SDK's fixtures take from Azure, and what they get here:

- the namespace's shared access key: the hub's development key, checked by the hub;
- an Entra ID credential (``get_credential``): the SDK's ``AzureNamedKeyCredential`` for that key,
  since the hub has no Entra ID (the credential-taking code paths of the clients are the same);
- ``client_args`` (how the SDK's fixtures redirect clients to its recording proxy): ``use_tls=False``,
  and the hub's address as the custom endpoint for the tests that choose WebSocket;
- the management plane, a Storage account and the fault injector: none; the tests that need them
  are excluded (:data:`EXCLUDED`), each with its reason.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Final

import pytest
import structlog
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.settings import settings
from azure.eventhub import EventHubProducerClient, TransportType, parse_connection_string
from azure.eventhub._pyamqp import ReceiveClient
from azure.eventhub._pyamqp.authentication import SASTokenAuth

from worker.localhub.hub import LocalHub
from worker.localhub.store import HubSpec

PARTITION_COUNT: Final = 2
CONN_STR: Final = (
    "Endpoint=sb://{}/;SharedAccessKeyName={};SharedAccessKey={};EntityPath={};UseDevelopmentEmulator=true"
)
HOST: Final = "127.0.0.1"

#: The tests left out, by test function name (every parametrisation), each with its reason. The
#: outer test (tests/test_sdk_livetests.py) checks that nothing else is skipped and nothing fails;
#: docs/local-hub.md lists them. Those needing a Storage account, the management plane or the fault
#: injector are left out by their fixtures, below.
_TLS: Final = "with TLS to port 5671, its certificate checked against certifi's bundle: the local hub has no TLS"
EXCLUDED: Final[dict[str, str]] = {
    "test_client_with_ssl_context": "checks TLS certificate validation against a public CA: the local hub has no TLS",
    "test_client_with_ssl_context_async": (
        "checks TLS certificate validation against a public CA: the local hub has no TLS"
    ),
    "test_send_amqp_annotated_message": f"its consumer connects without the fixtures' client_args, {_TLS}",
    "test_send_with_long_interval_sync": f"its receive client connects without the fixtures' client_args, {_TLS}",
    "test_send_with_long_interval_async": f"its receive client connects without the fixtures' client_args, {_TLS}",
    "test_send_connection_idle_timeout_and_reconnect_async": (
        f"its second client connects without the fixtures' client_args, {_TLS}"
    ),
    "test_get_partition_properties": (
        f"passes client_args=client_args as one keyword, which the client ignores, so it connects {_TLS}"
    ),
    "test_client_invalid_credential": (
        "its last clients connect without the fixtures' client_args, with TLS, to check a missing CA file"
    ),
    "test_client_invalid_credential_async": (
        "its last clients connect without the fixtures' client_args, with TLS, to check a missing CA file"
    ),
    "test_long_sleep": "idles 220 s on an open connection, to see the service's idle timeout",
    "test_long_wait_small_buffer": "skipped by the SDK itself: 'not testing correctly + flaky, fix during MQ'",
    "test_send_and_receive_large_body_size": (
        "skipped by the SDK itself for pyamqp: 'open issue regarding write timeout'"
    ),
}
#: The tests that choose AMQP over WebSocket themselves: the SDK goes to port 443 for WebSocket unless
#: given a custom endpoint, so theirs is the hub's address (as the SDK's fixtures give their proxy's).
WEBSOCKET_TESTS: Final = frozenset(
    {
        "test_receive_over_websocket_sync",
        "test_receive_over_websocket_async",
        "test_send_over_websocket_sync",
        "test_send_over_websocket_async",
        "test_send_with_create_event_batch_with_app_prop_sync",
        "test_send_with_create_event_batch_async",
    }
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--sleep", action="store", default="True", help="sleep on reconnect test: True or False")


def pytest_configure(config: pytest.Config) -> None:
    # The hub's own log (structlog, to stdout by default): its warnings and errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    for marker in ("live", "liveTest", "no_amqpproxy"):
        config.addinivalue_line("markers", f"{marker}: a marker of the SDK's live tests")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "originalname", None) or item.name.split("[", 1)[0]
        reason = EXCLUDED.get(function)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"excluded: {reason}"), append=False)


# The local hub ------------------------------------------------------------------------------------


class HubThread:
    """A local hub on its own event loop in a daemon thread, for the SDK's sync and async tests alike."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"localhub-{name}", daemon=True)
        self.hub = LocalHub([HubSpec(name, PARTITION_COUNT, ("$Default",))], host=HOST, port=0)

    def __enter__(self) -> LocalHub:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.hub.start(), self.loop).result(timeout=30)
        return self.hub

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.hub.stop(), self.loop).result(timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
            self.loop.close()


@pytest.fixture
def live_eventhub() -> Iterator[dict[str, str]]:
    with HubThread("eh" + uuid.uuid4().hex[:12]) as hub:
        parts = parse_connection_string(hub.connection_string())
        yield {
            "resource_group": "",
            "hostname": parts.fully_qualified_namespace,
            "key_name": str(parts.shared_access_key_name),
            "access_key": str(parts.shared_access_key),
            "namespace": "localhub",
            "event_hub": str(parts.eventhub_name),
            "consumer_group": "$Default",
            "partition": "0",
            "connection_str": hub.connection_string(),
        }


# Settings of the SDK's fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="session", params=[False], ids=["pyamqp"])
def uamqp_transport(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture(scope="session", params=[TransportType.Amqp, TransportType.AmqpOverWebsocket], ids=["amqp", "ws"])
def socket_transport(request: pytest.FixtureRequest) -> TransportType:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def timeout_factor(uamqp_transport: bool) -> int:
    return 1000 if uamqp_transport else 1


@pytest.fixture
def sleep(request: pytest.FixtureRequest) -> bool:
    return str(request.config.getoption("--sleep")).lower() in ("true", "yes", "1", "y")


@pytest.fixture(scope="session")
def fake_span() -> Any:
    return importlib.import_module("tracing_common").FakeSpan  # the SDK's own test helper, beside this file


@pytest.fixture
def enable_tracing(fake_span: Any) -> Iterator[Any]:
    settings.tracing_implementation.set_value(fake_span)
    yield fake_span
    settings.tracing_implementation.set_value(None)


@pytest.fixture
def client_args(live_eventhub: dict[str, str], request: pytest.FixtureRequest) -> dict[str, Any]:
    """What the SDK's fixtures pass to clients: here, TLS off (as the emulator flag of a connection
    string turns it off), and for the tests that choose WebSocket, the hub's address as the custom
    endpoint."""
    args: dict[str, Any] = {"use_tls": False}
    if request.node.originalname in WEBSOCKET_TESTS:
        args["custom_endpoint_address"] = f"sb://{live_eventhub['hostname']}"
    return args


# Credentials --------------------------------------------------------------------------------------


def _credential_for(key_name: str, key: str) -> Callable[..., AzureNamedKeyCredential]:
    def credential(*, is_async: bool = False, **_: object) -> AzureNamedKeyCredential:
        return AzureNamedKeyCredential(key_name, key)

    return credential


@pytest.fixture
def get_credential(live_eventhub: dict[str, str]) -> Callable[..., AzureNamedKeyCredential]:
    return _credential_for(live_eventhub["key_name"], live_eventhub["access_key"])


@pytest.fixture
def get_credential_async(live_eventhub: dict[str, str]) -> Callable[..., AzureNamedKeyCredential]:
    return partial(_credential_for(live_eventhub["key_name"], live_eventhub["access_key"]), is_async=True)


@pytest.fixture
def connection_str(live_eventhub: dict[str, str]) -> str:
    return CONN_STR.format(
        live_eventhub["hostname"], live_eventhub["key_name"], live_eventhub["access_key"], live_eventhub["event_hub"]
    )


@pytest.fixture
def invalid_hostname(live_eventhub: dict[str, str]) -> str:
    return CONN_STR.format(
        "invalid123.servicebus.windows.net",
        live_eventhub["key_name"],
        live_eventhub["access_key"],
        live_eventhub["event_hub"],
    )


@pytest.fixture
def invalid_key(live_eventhub: dict[str, str]) -> str:
    return CONN_STR.format(live_eventhub["hostname"], live_eventhub["key_name"], "invalid", live_eventhub["event_hub"])


@pytest.fixture
def invalid_policy(live_eventhub: dict[str, str]) -> str:
    return CONN_STR.format(
        live_eventhub["hostname"], "invalid", live_eventhub["access_key"], live_eventhub["event_hub"]
    )


@pytest.fixture
def auth_credentials(live_eventhub: dict[str, str], get_credential: Callable[..., Any]) -> tuple[str, str, Any]:
    return live_eventhub["hostname"], live_eventhub["event_hub"], get_credential


@pytest.fixture
def auth_credentials_async(
    live_eventhub: dict[str, str], get_credential_async: Callable[..., Any]
) -> tuple[str, str, Any]:
    return live_eventhub["hostname"], live_eventhub["event_hub"], get_credential_async


def _receivers(live_eventhub: dict[str, str], client_args: dict[str, Any], timeout: int) -> list[ReceiveClient]:
    """The SDK's fixtures open one pyamqp receive client per partition, on a SAS token of the key."""
    args = dict(client_args)
    receivers = []
    for partition in range(PARTITION_COUNT):
        uri = f"sb://{live_eventhub['hostname']}/{live_eventhub['event_hub']}"
        source = (
            f"amqps://{live_eventhub['hostname']}/{live_eventhub['event_hub']}/ConsumerGroups/"
            f"{live_eventhub['consumer_group']}/Partitions/{partition}"
        )
        auth = SASTokenAuth(uri, uri, live_eventhub["key_name"], live_eventhub["access_key"])
        receiver = ReceiveClient(  # type: ignore[no-untyped-call]
            live_eventhub["hostname"],
            source,
            auth=auth,
            network_trace=False,
            timeout=timeout,
            link_credit=500,
            **args,
        )
        receiver.open()  # type: ignore[no-untyped-call]
        receivers.append(receiver)
    return receivers


@pytest.fixture
def connstr_receivers(
    live_eventhub: dict[str, str], client_args: dict[str, Any]
) -> Iterator[tuple[str, list[ReceiveClient]]]:
    receivers = _receivers(live_eventhub, client_args, timeout=0)
    yield live_eventhub["connection_str"], receivers
    for receiver in receivers:
        receiver.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def auth_credential_receivers(
    live_eventhub: dict[str, str], client_args: dict[str, Any], get_credential: Callable[..., Any]
) -> Iterator[tuple[str, str, Any, list[ReceiveClient]]]:
    receivers = _receivers(live_eventhub, client_args, timeout=30)
    yield live_eventhub["hostname"], live_eventhub["event_hub"], get_credential, receivers
    for receiver in receivers:
        receiver.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def auth_credential_receivers_async(
    live_eventhub: dict[str, str], client_args: dict[str, Any], get_credential_async: Callable[..., Any]
) -> Iterator[tuple[str, str, Any, list[ReceiveClient]]]:
    receivers = _receivers(live_eventhub, client_args, timeout=30)
    yield live_eventhub["hostname"], live_eventhub["event_hub"], get_credential_async, receivers
    for receiver in receivers:
        receiver.close()  # type: ignore[no-untyped-call]


def _senders(
    live_eventhub: dict[str, str], client_args: dict[str, Any], get_credential: Callable[..., Any]
) -> tuple[EventHubProducerClient, list[Any]]:
    client = EventHubProducerClient(
        fully_qualified_namespace=live_eventhub["hostname"],
        eventhub_name=live_eventhub["event_hub"],
        credential=get_credential(),
        **client_args,
    )
    return client, [client._create_producer(partition_id=p) for p in client.get_partition_ids()]


@pytest.fixture
def auth_credential_senders(
    live_eventhub: dict[str, str], client_args: dict[str, Any], get_credential: Callable[..., Any]
) -> Iterator[tuple[str, str, Any, list[Any]]]:
    client, senders = _senders(live_eventhub, client_args, get_credential)
    yield live_eventhub["hostname"], live_eventhub["event_hub"], get_credential, senders
    for sender in senders:
        sender.close()
    client.close()


@pytest.fixture
def auth_credential_senders_async(
    live_eventhub: dict[str, str], client_args: dict[str, Any], get_credential_async: Callable[..., Any]
) -> Iterator[tuple[str, str, Any, list[Any]]]:
    client, senders = _senders(live_eventhub, client_args, get_credential_async)
    yield live_eventhub["hostname"], live_eventhub["event_hub"], get_credential_async, senders
    for sender in senders:
        sender.close()
    client.close()


# What the hub does not stand in for ----------------------------------------------------------------


def _absent(what: str) -> None:
    pytest.skip(f"excluded: needs {what}, which a local hub does not stand in for")


@pytest.fixture
def storage_url() -> None:
    _absent("an Azure Storage account")


@pytest.fixture
def checkpoint_store() -> None:
    _absent("an Azure Storage account")


@pytest.fixture
def checkpoint_store_aio() -> None:
    _absent("an Azure Storage account")


@pytest.fixture
def resource_mgmt_client() -> None:
    _absent("the Event Hubs management plane")


@pytest.fixture
def faultinjector() -> None:
    _absent("the AMQP fault injector")
