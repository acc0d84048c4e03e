"""A consumer process for the tests: the real SDK with the real BlobCheckpointStore, in a consumer group shared
with other processes. Writes one JSON line per event and per partition claimed or released; stops on SIGTERM.

    python -m tests.peers.consumer HUB_CONNECTION_STRING STORAGE_CONNECTION_STRING CONTAINER OUTPUT
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import orjson
from azure.eventhub import CloseReason, EventData
from azure.eventhub.aio import EventHubConsumerClient, PartitionContext
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore


async def consume(hub: str, storage: str, container: str, output: Path) -> None:
    store = BlobCheckpointStore.from_connection_string(storage, container)
    client = EventHubConsumerClient.from_connection_string(
        hub, "$Default", checkpoint_store=store, load_balancing_interval=1, partition_ownership_expiration_interval=5
    )
    with output.open("ab", buffering=0) as out:

        def record(**fields: object) -> None:
            out.write(orjson.dumps(fields) + b"\n")

        async def on_event(context: PartitionContext, event: EventData | None) -> None:
            if event is not None:
                record(partition=context.partition_id, body=event.body_as_str())
                await context.update_checkpoint(event)

        async def on_partition_initialize(context: PartitionContext) -> None:
            record(claimed=context.partition_id)

        async def on_partition_close(context: PartitionContext, reason: CloseReason) -> None:
            record(released=context.partition_id, reason=reason.name)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with client:
            task = asyncio.create_task(
                client.receive(
                    on_event,
                    starting_position="-1",
                    on_partition_initialize=on_partition_initialize,
                    on_partition_close=on_partition_close,
                )
            )
            await stop.wait()
            await client.close()
            await task


if __name__ == "__main__":
    hub_cs, storage_cs, container_name, path = sys.argv[1:5]
    asyncio.run(consume(hub_cs, storage_cs, container_name, Path(path)))
