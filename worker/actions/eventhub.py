"""The ``eventhub`` action: forward the event (or a templated body) to another Event Hub.

With a connection string (``${env:NAME}``) or, given a fully qualified namespace, Azure AD. Each
message carries the action's idempotency key as its message id and in the ``idempotency-key``
property, with the source event's id and the rule; the partition key (a template, by default the
event's subject) keeps a subject's events in one partition, in order.
"""

from __future__ import annotations

from typing import Self

from azure.eventhub import EventData
from azure.eventhub.aio import EventHubProducerClient
from azure.eventhub.exceptions import AuthenticationError, EventDataError, EventHubError
from pydantic import Field, model_validator

from worker.actions.base import ActionParams, PlannedAction
from worker.actions.registry import ActionType, register
from worker.actions.retry import RetryPolicy
from worker.actions.secrets import Secret
from worker.actions.services import Services
from worker.actions.templates import JsonTemplate, Template, context_of
from worker.actions.tokens import TokenSource
from worker.errors import TargetRejected, TargetUnavailable
from worker.jsontext import dumps


class EventHubParams(ActionParams):
    #: The Event Hub's name.
    eventhub: str
    #: ``${env:NAME}``: a namespace or Event Hub connection string.
    connection_string: Secret | None = None
    #: Without a connection string: ``NAMESPACE.servicebus.windows.net``, reached with Azure AD.
    namespace: str | None = None
    body: JsonTemplate = JsonTemplate.compile("{{ event }}")
    #: A template; empty output sends without a key (round robin).
    partition_key: Template | None = Template.compile("{{ subject or '' }}")
    #: Application properties: templates by name.
    properties: dict[str, Template] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_way_in(self) -> Self:
        if (self.connection_string is None) == (self.namespace is None):
            raise ValueError("give either 'connection_string' or 'namespace' (with Azure AD)")
        return self


def build_event(action: PlannedAction, params: EventHubParams) -> tuple[EventData, str | None]:
    """The message for one action, and its partition key (None: no key)."""
    context = context_of(action)
    data = EventData(dumps(params.body.render(context)))
    data.content_type = "application/json"
    data.message_id = action.idempotency_key
    properties: dict[str | bytes, object] = {name: t.render(context) for name, t in params.properties.items()}
    properties.update({"idempotency-key": action.idempotency_key, "event-id": action.event.id, "rule": action.rule})
    data.properties = properties
    key = params.partition_key.render(context) if params.partition_key is not None else ""
    return data, key or None


class EventHubExecutor:
    def __init__(self, params: EventHubParams, services: Services) -> None:
        self._params = params
        self._tokens: TokenSource = services.tokens
        self._producer: EventHubProducerClient | None = None
        namespace = params.namespace or _namespace_of(params.connection_string)
        self.target = f"eventhub://{namespace}/{params.eventhub}"

    def _client(self) -> EventHubProducerClient:
        if self._producer is None:
            params = self._params
            if params.connection_string is not None:
                self._producer = EventHubProducerClient.from_connection_string(
                    params.connection_string.value, eventhub_name=params.eventhub
                )
            else:
                assert params.namespace is not None  # noqa: S101 - checked by the parameters' validator
                self._producer = EventHubProducerClient(params.namespace, params.eventhub, self._tokens.credential())
        return self._producer

    async def execute(self, action: PlannedAction) -> None:
        data, key = build_event(action, self._params)
        try:
            await self._client().send_batch([data], partition_key=key)
        except (AuthenticationError, EventDataError) as exc:
            raise TargetRejected(f"{self.target}: {type(exc).__name__}: {exc.message}") from exc
        except EventHubError as exc:
            raise TargetUnavailable(f"{self.target}: {type(exc).__name__}: {exc.message}") from exc

    async def aclose(self) -> None:
        if self._producer is not None:
            await self._producer.close()
            self._producer = None


def _namespace_of(connection_string: Secret | None) -> str:
    """The host of a connection string's ``Endpoint=sb://HOST/`` (not secret)."""
    text = connection_string.value if connection_string else ""
    for part in text.split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() == "endpoint":
            return value.strip().removeprefix("sb://").rstrip("/")
    return "unknown-namespace"


EVENTHUB = register(
    ActionType(
        "eventhub",
        EventHubParams,
        EventHubExecutor,
        "forward the event (or a templated body) to another Event Hub",
        retry=RetryPolicy(attempts=5, first_delay=1.0, max_delay=60.0),
        timeout=60.0,
    )
)
