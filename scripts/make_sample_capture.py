"""Write the bundled sample capture: realistic Azure ML events as Event Hubs Capture would store them.

    python scripts/make_sample_capture.py [--out worker/samples/capture] [--count 400] [--seed 7]

Events come from the project's generator, delivered the way Event Grid delivers them (out of order,
some twice), keyed by subject onto two partitions, and written in one-minute capture windows under
the default path layout ``{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro``.
A few messages from another workspace, in the CloudEvents schema, and one malformed body are mixed
in, so a replay shows every outcome (late events included). The records are the same for a given seed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import zlib
from datetime import timedelta
from pathlib import Path

import orjson

from worker.events import Message, Position
from worker.replay.capture import write_capture
from worker.sending import mlevents

NAMESPACE, EVENTHUB, PARTITIONS = "mlevents", "ml-workspace-events", 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "worker" / "samples" / "capture")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(args.seed)  # noqa: S311 - sample data
    deliveries = mlevents.sample_deliveries(args.count, args.seed)
    _straggle(deliveries, rng)

    partitions: dict[str, list[Message]] = {str(p): [] for p in range(PARTITIONS)}
    for delivery in deliveries:
        subject = _subject(delivery.body)
        partition = str(zlib.crc32(subject.encode()) % PARTITIONS)
        _append(partitions[partition], partition, delivery.body, delivery.properties, delivery, rng)
    # one malformed body, as a misconfigured publisher might send
    last = partitions["0"][-1]
    _append(partitions["0"], "0", b'{"eventType": "truncated', {}, None, rng, after=last)

    if args.out.exists():
        shutil.rmtree(args.out)
    files = 0
    for partition, messages in partitions.items():
        for window, chunk in _windows(messages):
            path = args.out / NAMESPACE / EVENTHUB / partition / window
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as stream:
                write_capture(stream, chunk, codec="deflate" if partition == "1" else "null")
            files += 1
    where = os.path.relpath(args.out)
    print(f"wrote {sum(map(len, partitions.values()))} messages in {files} files under {where}")


def _straggle(deliveries: list[mlevents.Delivery], rng: random.Random, count: int = 3) -> None:
    """Hold back a few events well past the reorder window, behind a later event of their subject:
    a replay counts them as late."""
    subjects = [_subject(d.body) for d in deliveries]
    moved = 0
    for index in rng.sample(range(len(deliveries) // 2), len(deliveries) // 2):
        later = [j for j in range(index + 1, len(deliveries)) if subjects[j] == subjects[index]]
        if moved == count or not later or later[0] + 40 >= len(deliveries):
            continue
        target = later[0] + 40  # about 40 seconds after the later event of its subject
        deliveries.insert(target, deliveries.pop(index))
        subjects.insert(target, subjects.pop(index))
        moved += 1


def _subject(body: bytes) -> str:
    document = orjson.loads(body)
    event = document[0] if isinstance(document, list) else document
    return str(event.get("subject", ""))


def _append(
    messages: list[Message],
    partition: str,
    body: bytes,
    properties: object,
    delivery: mlevents.Delivery | None,
    rng: random.Random,
    *,
    after: Message | None = None,
) -> None:
    previous = messages[-1].position if messages else None
    sequence = 0 if previous is None else (previous.sequence_number or 0) + 1
    offset = 0 if previous is None else int(previous.offset or 0) + 1024
    # the hub stamps arrival: a little after the event's own time, never before the previous message
    base = delivery.event_time if delivery is not None else (after or messages[-1]).position.enqueued_time
    assert base is not None  # noqa: S101
    enqueued = base + timedelta(milliseconds=rng.randint(20, 900))
    if previous is not None and previous.enqueued_time is not None and enqueued <= previous.enqueued_time:
        enqueued = previous.enqueued_time + timedelta(milliseconds=1)
    assert isinstance(properties, dict)  # noqa: S101
    messages.append(Message(body, Position(partition, str(offset), sequence, enqueued), properties))


def _windows(messages: list[Message]) -> list[tuple[str, list[Message]]]:
    """Messages grouped by one-minute capture window, with the window's path."""
    out: dict[str, list[Message]] = {}
    for message in messages:
        moment = message.position.enqueued_time
        assert moment is not None  # noqa: S101
        out.setdefault(moment.strftime("%Y/%m/%d/%H/%M/00.avro"), []).append(message)
    return list(out.items())


if __name__ == "__main__":
    main()
