"""The actions' Event Hubs client: one producer per destination hub, and its failures translated once, here.

An authentication failure or a message the hub refuses is :class:`~worker.errors.TargetRejected`
(permanent); any other failure of the SDK (an unreachable or unknown hub, a timeout) is
:class:`~worker.errors.TargetUnavailable` (transient).
"""

from __future__ import annotations

from azure.eventhub import EventData
from azure.eventhub.aio import EventHubProducerClient
from azure.eventhub.exceptions import AuthenticationError, EventDataError, EventHubError

from worker.actions.clients import HubDestination, HubMessage, TokenSource
from worker.errors import TargetRejected, TargetUnavailable


class HubProducers:
    """Producers made on first use, one per destination, shared by every eventhub action."""

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens
        self._producers: dict[HubDestination, EventHubProducerClient] = {}

    async def send(self, destination: HubDestination, message: HubMessage) -> None:
        data = EventData(message.body)
        data.content_type = message.content_type
        data.message_id = message.message_id
        properties: dict[str | bytes, object] = dict(message.properties.items())
        data.properties = properties
        try:
            await self._producer(destination).send_batch([data], partition_key=message.partition_key)
        except (AuthenticationError, EventDataError) as exc:
            raise TargetRejected(f"{destination.target}: {type(exc).__name__}: {exc.message}") from exc
        except EventHubError as exc:
            raise TargetUnavailable(f"{destination.target}: {type(exc).__name__}: {exc.message}") from exc

    def _producer(self, destination: HubDestination) -> EventHubProducerClient:
        producer = self._producers.get(destination)
        if producer is None:
            if destination.connection_string is not None:
                producer = EventHubProducerClient.from_connection_string(
                    destination.connection_string, eventhub_name=destination.eventhub
                )
            else:
                assert destination.namespace is not None  # noqa: S101 - checked by the parameters' validator
                producer = EventHubProducerClient(
                    destination.namespace, destination.eventhub, self._tokens.credential()
                )
            self._producers[destination] = producer
        return producer

    async def aclose(self) -> None:
        producers, self._producers = self._producers, {}
        for producer in producers.values():
            await producer.close()
