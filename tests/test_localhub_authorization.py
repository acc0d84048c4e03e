"""Shared access signatures as the local hub checks them: tokens the SDK's own generators made, and bad ones."""

from __future__ import annotations

import time
from urllib.parse import quote_plus

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.eventhub._client_base import EventhubAzureNamedKeyTokenCredential
from azure.eventhub._pyamqp.utils import generate_sas_token

from worker.cli import main
from worker.localhub import authorization, management
from worker.localhub.authorization import (
    DEVELOPMENT_KEY,
    DEVELOPMENT_KEY_NAME,
    DEVELOPMENT_KEYS,
    Grant,
    Refusal,
    SasToken,
    covers,
    parse_token,
    verify,
)
from worker.localhub.hub import LocalHub, connection_string
from worker.localhub.store import HubSpec, HubStore, Retention

HUB = "sb://127.0.0.1:5672/ml-events"
NOW = 1_800_000_000
LATER = NOW + 3600
ML_EVENTS = HubStore(HubSpec("ml-events", 2, ("$Default",)), Retention(), NOW * 1000)


def sdk_token(audience: str = HUB, key_name: str = DEVELOPMENT_KEY_NAME, key: str = DEVELOPMENT_KEY) -> str:
    """A token as the SDK's connection-string credential makes it."""
    return str(generate_sas_token(audience, key_name, key, LATER))  # type: ignore[no-untyped-call]


def refusal(verdict: Grant | Refusal) -> str:
    assert isinstance(verdict, Refusal), verdict
    return verdict.description


def test_the_development_key_is_32_bytes_of_base64() -> None:
    import base64  # noqa: PLC0415 - only here

    assert len(base64.b64decode(DEVELOPMENT_KEY, validate=True)) == 32
    assert DEVELOPMENT_KEYS == {"RootManageSharedAccessKey": DEVELOPMENT_KEY}


def test_a_token_the_sdk_made_grants_its_resource() -> None:
    assert verify(sdk_token(), HUB, DEVELOPMENT_KEYS, NOW) == Grant(HUB, LATER)


def test_a_named_key_credentials_token_is_valid() -> None:
    credential = EventhubAzureNamedKeyTokenCredential(AzureNamedKeyCredential(DEVELOPMENT_KEY_NAME, DEVELOPMENT_KEY))
    audience = f"{HUB}/consumergroups/$Default"
    token = credential.get_token(audience)
    grant = verify(str(token.token), audience, DEVELOPMENT_KEYS, time.time())
    assert grant == Grant(audience, token.expires_on)


def test_the_fields_may_come_in_any_order() -> None:
    fields = sdk_token().removeprefix("SharedAccessSignature ").split("&")
    reordered = "SharedAccessSignature " + "&".join(reversed(fields))
    assert verify(reordered, HUB, DEVELOPMENT_KEYS, NOW) == Grant(HUB, LATER)


def test_the_signature_covers_the_resource_as_sent() -> None:
    signed = authorization.signature(DEVELOPMENT_KEY, quote_plus(HUB), LATER)
    token = parse_token(sdk_token())
    assert token == SasToken(quote_plus(HUB), signed, LATER, DEVELOPMENT_KEY_NAME)
    assert isinstance(token, SasToken)
    assert token.resource_uri == HUB


def test_a_wrong_key_is_a_signature_mismatch() -> None:
    wrong = sdk_token(key=DEVELOPMENT_KEY.replace("U", "V", 1))
    assert refusal(verify(wrong, HUB, DEVELOPMENT_KEYS, NOW)) == (
        "InvalidSignature: the token's signature does not match key 'RootManageSharedAccessKey'"
    )


def test_an_unknown_key_name_is_refused() -> None:
    token = sdk_token(key_name="listen-only")
    assert "'listen-only' is not one of this hub's keys" in refusal(verify(token, HUB, DEVELOPMENT_KEYS, NOW))


def test_a_token_for_other_keys_is_checked_against_them() -> None:
    keys = {"send": "s3nd-k3y", "listen": "l1st3n-k3y"}
    assert verify(sdk_token(key_name="listen", key="l1st3n-k3y"), HUB, keys, NOW) == Grant(HUB, LATER)
    assert "InvalidSignature" in refusal(verify(sdk_token(key_name="send", key="l1st3n-k3y"), HUB, keys, NOW))
    assert "is not one of" in refusal(verify(sdk_token(), HUB, keys, NOW))


def test_an_expired_token_is_refused_with_its_expiry() -> None:
    assert refusal(verify(sdk_token(), HUB, DEVELOPMENT_KEYS, LATER)) == (
        "ExpiredToken: the token expired at 2027-01-15T09:00:00Z"
    )
    assert isinstance(verify(sdk_token(), HUB, DEVELOPMENT_KEYS, LATER - 1), Grant)


def test_a_token_whose_signature_does_not_cover_a_changed_expiry_is_refused() -> None:
    token = sdk_token().replace(f"se={LATER}", f"se={LATER + 1}")
    assert "InvalidSignature" in refusal(verify(token, HUB, DEVELOPMENT_KEYS, NOW))


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("sr=x&sig=y&se=1&skn=k", "starts with 'SharedAccessSignature'"),
        ("SharedAccessSignature sr=x&sig=y&se=1", "lacks the field(s) skn"),
        ("SharedAccessSignature sig=y&se=1", "lacks the field(s) skn, sr"),
        ("SharedAccessSignature sr=x&sr=x&sig=y&se=1&skn=k", "the field 'sr' appears twice"),
        ("SharedAccessSignature sr=x&sig=y&se=soon&skn=k", "se='soon' is not epoch seconds"),
        ("SharedAccessSignature sr=x&sig&se=1&skn=k", "'sig' is not a name=value field"),
        ("SharedAccessSignature sr=x&sig=&se=1&skn=k", "'sig=' is not a name=value field"),
        ("", "starts with"),
    ],
)
def test_a_malformed_token_is_refused_saying_why(token: str, says: str) -> None:
    description = refusal(verify(token, HUB, DEVELOPMENT_KEYS, NOW))
    assert description.startswith("MalformedToken: ")
    assert says in description


def test_a_token_for_another_hub_does_not_cover_this_one() -> None:
    other = sdk_token("sb://127.0.0.1:5672/other-hub")
    assert refusal(verify(other, HUB, DEVELOPMENT_KEYS, NOW)) == (
        f"InvalidAudience: the token's resource 'sb://127.0.0.1:5672/other-hub' does not cover the audience '{HUB}'"
    )


def test_a_namespace_token_covers_every_hub_and_consumer_group() -> None:
    for resource in ("sb://127.0.0.1:5672/", "sb://127.0.0.1/", "sb://127.0.0.1"):
        token = sdk_token(resource)
        assert verify(token, HUB, DEVELOPMENT_KEYS, NOW) == Grant(resource, LATER)
        assert isinstance(verify(token, f"{HUB}/consumergroups/$Default", DEVELOPMENT_KEYS, NOW), Grant)


@pytest.mark.parametrize(
    ("resource", "uri", "covered"),
    [
        (HUB, HUB, True),
        (HUB, "amqps://127.0.0.1:5672/ml-events/Partitions/0", True),
        (HUB, "amqps://127.0.0.1:5672/ml-events/ConsumerGroups/$Default/Partitions/0", True),
        ("SB://127.0.0.1:5672/ML-Events/", HUB, True),  # case, scheme and a trailing slash do not matter
        (HUB, "sb://127.0.0.1:15672/ml-events", True),  # nor the port: a namespace has none
        (HUB, "sb://localhost:5672/ml-events", False),  # another host is another namespace
        (HUB, "sb://127.0.0.1:5672/ml-events-2", False),  # whole segments, not a string prefix
        (HUB, "sb://127.0.0.1:5672/", False),  # a hub's token does not cover the namespace
        (f"{HUB}/consumergroups/audit", f"{HUB}/ConsumerGroups/$Default/Partitions/0", False),
        (f"{HUB}/consumergroups/audit", f"{HUB}/ConsumerGroups/Audit/Partitions/0", True),
        (f"{HUB}/consumergroups/audit", HUB, False),
        (HUB, "ml-events", True),  # a relative address is in this namespace
        (HUB, "ml-events/Partitions/1", True),
        (HUB, "other", False),
        ("sb://[::1]:5672/ml-events", "amqps://[::1]:15672/ml-events/Partitions/0", True),
        ("sb://[::1]:5672/ml-events", "amqps://[::2]:5672/ml-events", False),
    ],
)
def test_covers(resource: str, uri: str, covered: bool) -> None:
    assert covers(resource, uri) is covered


def test_grants_authorize_what_they_cover_until_they_expire() -> None:
    grants = [Grant(f"{HUB}/consumergroups/audit", LATER), Grant("sb://127.0.0.1/other", NOW)]
    audit = "amqps://127.0.0.1:5672/ml-events/ConsumerGroups/audit/Partitions/0"
    assert authorization.authorized(grants, audit, NOW)
    assert not authorization.authorized(grants, audit, LATER)
    assert not authorization.authorized(grants, "amqps://127.0.0.1:5672/ml-events", NOW)
    assert not authorization.authorized(grants, "amqps://127.0.0.1/other", NOW)  # expired at NOW
    assert not authorization.authorized([], audit, NOW)


def test_the_link_refusal_names_the_claim_and_the_resource() -> None:
    assert authorization.unauthorized_link("Listen", "sb://h/hub/consumergroups/$default/partitions/0") == (
        "Unauthorized access. 'Listen' claim(s) are required to perform this operation. "
        "Resource: 'sb://h/hub/consumergroups/$default/partitions/0'."
    )


# The token node and the management node ------------------------------------------------------------


def put(token: object, **properties: object) -> tuple[management.Reply, Grant | None]:
    request: dict[object, object] = {
        "operation": "put-token",
        "type": "servicebus.windows.net:sastoken",
        "name": HUB,
        "expiration": LATER,
    }
    request.update(properties)
    return management.put_token(request, token, DEVELOPMENT_KEYS, NOW, hub_named)


def hub_named(name: str) -> HubStore | None:
    """The stores of a namespace holding one hub, ``ml-events``."""
    return ML_EVENTS if name == "ml-events" else None


def test_put_token_accepts_a_valid_token() -> None:
    assert put(sdk_token()) == (management.Reply(202, "Accepted"), Grant(HUB, LATER))
    assert put(sdk_token().encode()) == (management.Reply(202, "Accepted"), Grant(HUB, LATER))


def test_put_token_refuses_with_401_saying_why() -> None:
    reply, grant = put(sdk_token(key="not-the-key"))
    assert (reply.status, grant) == (401, None)
    assert reply.description.startswith("InvalidSignature: ")
    reply, grant = put(sdk_token(), name="sb://127.0.0.1:5672/other")
    assert (reply.status, grant) == (401, None)
    assert reply.description.startswith("InvalidAudience: ")
    assert put(None)[0].status == 401


def test_put_token_for_a_hub_the_namespace_lacks_is_404() -> None:
    request: dict[object, object] = {
        "operation": "put-token",
        "type": "servicebus.windows.net:sastoken",
        "expiration": LATER,
    }
    for audience, status in (
        ("sb://127.0.0.1:5672/ml-events", 202),
        ("sb://127.0.0.1:5672/ml-events/ConsumerGroups/$Default", 202),
        ("sb://127.0.0.1:5672/", 202),  # a namespace's token names no hub
        ("sb://127.0.0.1:5672/fakehub", 404),
    ):
        token = sdk_token(audience)
        reply, grant = management.put_token({**request, "name": audience}, token, DEVELOPMENT_KEYS, NOW, hub_named)
        assert reply.status == status, audience
        assert (grant is None) is (status == 404)
    assert reply.description == "The messaging entity 'sb://127.0.0.1:5672/fakehub' could not be found."


def test_put_token_refuses_a_jwt_the_hub_has_no_entra_id() -> None:
    reply, grant = put("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", type="jwt")
    assert (reply.status, grant) == (401, None)
    assert "no Microsoft Entra ID" in reply.description
    reply, _ = put(sdk_token(), type="something-else")
    assert reply.status == 401
    assert "'something-else' is not 'servicebus.windows.net:sastoken'" in reply.description


def test_put_token_needs_the_operation_and_an_audience() -> None:
    assert put(sdk_token(), operation="delete-token")[0].status == 400
    assert put(sdk_token(), name="")[0].status == 400
    assert put(sdk_token(), name=None)[0].status == 400


def test_a_management_read_needs_a_security_token_for_its_hub() -> None:
    read: dict[object, object] = {"operation": "READ", "name": "ml-events", "type": "com.microsoft:eventhub"}
    assert management.refuse_read({**read, "security_token": sdk_token()}, DEVELOPMENT_KEYS, NOW) is None
    assert management.refuse_read({**read, "security_token": sdk_token("sb://h/")}, DEVELOPMENT_KEYS, NOW) is None
    absent = management.refuse_read(read, DEVELOPMENT_KEYS, NOW)
    assert absent == management.Reply(401, "Unauthorized: the management request carries no 'security_token'")
    other = management.refuse_read({**read, "security_token": sdk_token("sb://h/other")}, DEVELOPMENT_KEYS, NOW)
    assert other is not None
    assert other.status == 401
    assert other.description.startswith("InvalidAudience: ")
    expired = management.refuse_read({**read, "security_token": sdk_token()}, DEVELOPMENT_KEYS, LATER)
    assert expired is not None
    assert expired.description.startswith("ExpiredToken: ")


# The hub's keys ---------------------------------------------------------------------------------------


def test_the_connection_string_carries_the_hubs_first_key() -> None:
    assert connection_string("127.0.0.1", 5672, "ml-events") == (
        f"Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={DEVELOPMENT_KEY};"
        "EntityPath=ml-events;UseDevelopmentEmulator=true"
    )
    hub = LocalHub([HubSpec("ml-events")], port=5672, keys={"mine": "m1ne", "theirs": "th31rs"})
    assert hub.connection_string() == (
        "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=mine;SharedAccessKey=m1ne;"
        "EntityPath=ml-events;UseDevelopmentEmulator=true"
    )
    assert hub.state.keys == {"mine": "m1ne", "theirs": "th31rs"}
    assert LocalHub([HubSpec("ml-events")]).state.keys == DEVELOPMENT_KEYS


@pytest.mark.parametrize("keys", [{}, {"": "k"}, {"k": ""}])
def test_a_hub_needs_a_named_key(keys: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="at least one shared access key"):
        LocalHub([HubSpec("ml-events")], keys=keys)


@pytest.mark.parametrize("value", ["", "a;b", " padded"])
def test_the_command_refuses_a_key_that_would_break_its_connection_string(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for option in ("--key", "--key-name"):
        with pytest.raises(SystemExit) as exited:
            main(["localhub", option, value])
        assert exited.value.code == 2
        assert "or a ';' (it ends a field)" in capsys.readouterr().err
