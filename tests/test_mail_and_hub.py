"""The ``email`` action against a real aiosmtpd server (STARTTLS and implicit TLS, with a login), and
the ``eventhub`` action: its messages, and forwarding through the real producer to the local hub."""

from __future__ import annotations

import email
from collections.abc import AsyncIterator
from email.message import Message as MailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.hubclient import collect
from tests.servers import free_port
from tests.support import make_event
from tests.targets import Certificate, Mailbox, mail_server
from worker.actions import ActionSpec, PlannedAction, action_types, idempotency_key
from worker.actions.delivery.services import Services
from worker.actions.eventhub import EventHubParams, build_message
from worker.errors import ActionError, TargetRejected, TargetUnavailable
from worker.localhub.hub import LocalHub
from worker.localhub.store import HubSpec

#: aiosmtpd warns when AUTH is allowed without STARTTLS; its implicit TLS server is TLS throughout.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

ENV = {"SMTP_PASSWORD": "smtp-secret", "HUB": "Endpoint=sb://audit.servicebus.windows.net/;SharedAccessKeyName=s;"}


def spec(kind: str, **params: Any) -> ActionSpec:
    return ActionSpec(kind, 0, action_types()[kind].params.model_validate(params, context={"env": ENV}))


def planned(action_spec: ActionSpec, **event: Any) -> PlannedAction:
    return PlannedAction("mail-on-failed-run", action_spec, make_event(**event))


@pytest.fixture(params=["starttls", "implicit"])
async def smtp(request: pytest.FixtureRequest, certificate: Certificate) -> AsyncIterator[tuple[str, int, Mailbox]]:
    """An SMTP server on loopback that requires TLS (STARTTLS or implicit) before a login."""
    mailbox = Mailbox()
    tls: dict[str, Any] = (
        {"tls_context": certificate.server_context(), "require_starttls": True}
        if request.param == "starttls"
        # aiosmtpd counts only STARTTLS as TLS for AUTH; with implicit TLS the whole connection is.
        else {"ssl_context": certificate.server_context(), "auth_require_tls": False}
    )
    async with mail_server(mailbox, authenticator=mailbox.authenticator, auth_required=True, **tls) as port:
        yield request.param, port, mailbox


def mail_spec(tls: str, port: int, certificate: Certificate, **overrides: Any) -> ActionSpec:
    params: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "tls": tls,
        "ca_file": str(certificate.cert_file),
        "username": "ml-alerts",
        "password": "${env:SMTP_PASSWORD}",
        "sender": "ml-alerts@example.com",
        "to": ["oncall@example.com", "lead@example.com"],
        "cc": ["audit@example.com"],
        "subject": "Model {{ data.modelName }}\nregistered",
        "text": "Model {{ data.modelName }} ({{ subject }}) for {{ rule }}.",
        "html": "<p>Model <b>{{ data.modelName }}</b></p>",
    }
    return spec("email", **(params | overrides))


@pytest.mark.integration
async def test_a_mail_goes_out_over_tls_with_a_login(smtp: tuple[str, int, Mailbox], certificate: Certificate):
    tls, port, mailbox = smtp
    executor = action_types()["email"].executor(mail_spec(tls, port, certificate).params, Services())
    assert executor.target == f"smtp://127.0.0.1:{port}"
    await executor.execute(planned(mail_spec(tls, port, certificate), data={"modelName": "churn<1>"}))
    await executor.aclose()
    assert mailbox.logins == [("ml-alerts", "smtp-secret")]
    (envelope,) = mailbox.messages
    assert envelope.mail_from == "ml-alerts@example.com"
    assert envelope.rcpt_tos == ["oncall@example.com", "lead@example.com", "audit@example.com"]
    assert isinstance(envelope.content, bytes)
    message: MailMessage = email.message_from_bytes(envelope.content, policy=default_policy)
    assert message["Subject"] == "Model churn<1> registered"
    assert message["To"] == "oncall@example.com, lead@example.com"
    assert message["Cc"] == "audit@example.com"
    key = idempotency_key("ev-1", "mail-on-failed-run", 0)
    assert message["Message-ID"] == f"<{key}@azureml-events-worker>"
    assert message["X-Idempotency-Key"] == key
    assert message.is_multipart()
    text, html = (part.get_content() for part in message.iter_parts())  # type: ignore[attr-defined]
    assert text.strip() == "Model churn<1> (models/churn:3) for mail-on-failed-run."
    assert html.strip() == "<p>Model <b>churn&lt;1&gt;</b></p>"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("reply", "error"), [("550 no such user", TargetRejected), ("450 mailbox busy", TargetUnavailable)]
)
async def test_refused_recipients_are_permanent_or_transient_by_reply_code(
    certificate: Certificate, reply: str, error: type[ActionError]
):
    mailbox = Mailbox(reject={"oncall@example.com": reply, "lead@example.com": reply})
    async with mail_server(mailbox, ssl_context=certificate.server_context()) as port:
        action = mail_spec("implicit", port, certificate, username=None, password=None, cc=[])
        executor = action_types()["email"].executor(action.params, Services())
        with pytest.raises(error, match=reply.split(maxsplit=1)[0]):
            await executor.execute(planned(action))
    assert mailbox.messages == []


@pytest.mark.integration
async def test_an_untrusted_certificate_or_no_server_is_transient(certificate: Certificate, tmp_path: Path):
    action = mail_spec("implicit", free_port(), certificate)
    executor = action_types()["email"].executor(action.params, Services())
    with pytest.raises(TargetUnavailable):
        await executor.execute(planned(action))


# --- eventhub -------------------------------------------------------------------------------------


def test_the_forwarded_message_carries_the_event_and_its_key():
    action_spec = spec(
        "eventhub", eventhub="ml-production-changes", connection_string="${env:HUB}", properties={"stage": "prod"}
    )
    action = planned(action_spec, event_id="ev-9")
    assert isinstance(action_spec.params, EventHubParams)
    message = build_message(action, action_spec.params)
    body = orjson.loads(message.body)
    assert body["id"] == "ev-9"
    assert body["data"] == {"modelName": "churn", "modelTags": {"stage": "production"}}
    assert message.partition_key == "models/churn:3"
    key = idempotency_key("ev-9", "mail-on-failed-run", 0)
    assert message.message_id == key
    assert message.content_type == "application/json"
    assert message.properties == {
        "stage": "prod",
        "idempotency-key": key,
        "event-id": "ev-9",
        "rule": "mail-on-failed-run",
    }
    executor = action_types()["eventhub"].executor(action_spec.params, Services())
    assert executor.target == "eventhub://audit.servicebus.windows.net/ml-production-changes"


def test_a_templated_body_and_key():
    action_spec = spec(
        "eventhub",
        eventhub="models",
        namespace="ns.servicebus.windows.net",
        body={"model": "{{ data.modelName }}", "at": "{{ time }}"},
        partition_key="{{ data.modelName }}",
    )
    assert isinstance(action_spec.params, EventHubParams)
    message = build_message(planned(action_spec), action_spec.params)
    assert orjson.loads(message.body) == {"model": "churn", "at": "2026-11-01T09:00:00.123456+00:00"}
    assert message.partition_key == "churn"


@pytest.mark.parametrize(
    "params",
    [{"eventhub": "h"}, {"eventhub": "h", "namespace": "ns.servicebus.windows.net", "connection_string": "${env:HUB}"}],
)
def test_an_event_hub_is_reached_one_way(params: dict[str, str]):
    with pytest.raises(ValueError, match="either 'connection_string' or 'namespace'"):
        spec("eventhub", **params)


@pytest.mark.integration
@pytest.mark.usefixtures("sdk_garbage")
async def test_forwarded_to_a_real_hub_keyed_by_subject_and_refused_for_an_unknown_one():
    """Through the real producer to the local hub; read back with the real consumer."""
    async with LocalHub([HubSpec("audit", 4, ("$Default",))]) as hub:
        env = {"HUB": hub.connection_string()}
        action_spec = ActionSpec(
            "eventhub",
            0,
            action_types()["eventhub"].params.model_validate(
                {"eventhub": "audit", "connection_string": "${env:HUB}"}, context={"env": env}
            ),
        )
        services = Services()
        executor = action_types()["eventhub"].executor(action_spec.params, services)
        action = planned(action_spec, event_id="ev-42")
        try:
            await executor.execute(action)
            await executor.execute(action)  # a retry: the same message id, the receiver can dedupe
        finally:
            await executor.aclose()
        got = await collect(hub.connection_string(), None, 2, settle=0.2)
        assert [orjson.loads(e.body_as_str())["id"] for e in got.events] == ["ev-42", "ev-42"]
        assert {e.message_id for e in got.events} == {idempotency_key("ev-42", "mail-on-failed-run", 0)}
        assert {e.partition_key for e in got.events} == {b"models/churn:3"}
        assert {e.content_type for e in got.events} == {"application/json"}
        assert all(e.properties[b"event-id"] == b"ev-42" for e in got.events)
        assert len(set(got.partitions)) == 1

        wrong = ActionSpec(
            "eventhub",
            0,
            action_types()["eventhub"].params.model_validate(
                {"eventhub": "nope", "connection_string": "${env:HUB}"},
                context={"env": {"HUB": hub.connection_string("audit").replace("EntityPath=audit", "EntityPath=nope")}},
            ),
        )
        refused = action_types()["eventhub"].executor(wrong.params, services)
        try:
            with pytest.raises(ActionError):
                await refused.execute(planned(wrong))
        finally:
            await refused.aclose()
            await services.aclose()
