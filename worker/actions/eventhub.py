"""The ``eventhub`` action: forward the event (or a templated body) to another Event Hub.

With a connection string (``${env:NAME}``) or, given a fully qualified namespace, Azure AD. Each
message carries the action's idempotency key as its message id and in the ``idempotency-key``
property, with the source event's id and the rule; the partition key (a template, by default the
event's subject) keeps a subject's events in one partition, in order. The executor builds the
message; the shared :class:`~worker.actions.delivery.hub_client.HubProducers` (the one module of the actions
that imports azure-eventhub) sends it.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from worker.actions.base import ActionParams, PlannedAction
from worker.actions.clients import Clients, HubDestination, HubMessage
from worker.actions.secrets import Secret
from worker.actions.templates import JsonTemplate, Template, context_of
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


def build_message(action: PlannedAction, params: EventHubParams) -> HubMessage:
    """The message for one action."""
    context = context_of(action)
    properties: dict[str, object] = {name: t.render(context) for name, t in params.properties.items()}
    properties.update({"idempotency-key": action.idempotency_key, "event-id": action.event.id, "rule": action.rule})
    key = params.partition_key.render(context) if params.partition_key is not None else ""
    return HubMessage(dumps(params.body.render(context)), action.idempotency_key, properties, key or None)


class EventHubExecutor:
    def __init__(self, params: EventHubParams, clients: Clients) -> None:
        self._params = params
        self._hubs = clients.hubs
        secret = params.connection_string
        self._destination = HubDestination(params.eventhub, secret.value if secret else None, params.namespace)
        self.target = self._destination.target

    async def execute(self, action: PlannedAction) -> None:
        await self._hubs.send(self._destination, build_message(action, self._params))

    async def aclose(self) -> None:
        return None
