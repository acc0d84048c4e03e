"""Two consumer processes share a consumer group through the real BlobCheckpointStore on Azurite.

Partitions are split between them; when one stops, the other takes them all; every event is received.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from azure.storage.blob import BlobServiceClient

from tests.servers import HUB_PARTITIONS, ROOT, Azurite, HubServer
from worker.sending import mlevents
from worker.sending.publish import Outgoing, publish

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sdk_garbage")]


@contextmanager
def consumer(localhub: HubServer, azurite: Azurite, container: str, output: Path) -> Iterator[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "tests.peers.consumer"]
    command += [localhub.connection_string, azurite.connection_string, container, str(output)]
    with output.with_suffix(".log").open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, stderr=log)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def lines(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.endswith(b"}")]


def held(path: Path) -> set[str]:
    """The partitions a consumer holds now: claimed and not released since."""
    holding: set[str] = set()
    for line in lines(path):
        if "claimed" in line:
            holding.add(line["claimed"])
        elif "released" in line:
            holding.discard(line["released"])
    return holding


def bodies(*paths: Path) -> set[str]:
    return {line["body"] for path in paths for line in lines(path) if "body" in line}


def wait_for(condition: Callable[[], bool], what: str, within: float = 45.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)


async def send_wave(localhub: HubServer, name: str, count: int = 40) -> set[str]:
    events = list(mlevents.generate(count, mlevents.Options(seed=hash(name) % 1000)))
    messages = [Outgoing(f"{name}-{i}".encode(), {}, str(event["subject"])) for i, event in enumerate(events)]
    report = await publish(localhub.connection_string, messages)
    assert report.sent == count
    return {m.body.decode() for m in messages}


async def test_two_processes_share_the_partitions_and_lose_no_event(
    localhub: HubServer, azurite: Azurite, tmp_path: Path
) -> None:
    container = f"checkpoints-{uuid.uuid4().hex[:8]}"
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    first_out, second_out = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    all_partitions = {str(i) for i in range(HUB_PARTITIONS)}
    with consumer(localhub, azurite, container, first_out) as first:
        wave1 = await send_wave(localhub, "wave1")
        wait_for(lambda: held(first_out) == all_partitions, "the first consumer holds every partition")
        wait_for(lambda: wave1 <= bodies(first_out), "the first consumer got the first wave")
        with consumer(localhub, azurite, container, second_out) as second:
            wait_for(
                lambda: len(held(second_out)) == HUB_PARTITIONS // 2 and len(held(first_out)) == HUB_PARTITIONS // 2,
                "the two consumers split the partitions",
            )
            assert held(first_out) | held(second_out) == all_partitions
            wave2 = await send_wave(localhub, "wave2")
            wait_for(lambda: wave2 <= bodies(first_out, second_out), "the second wave arrived")
            assert bodies(first_out) & wave2
            assert bodies(second_out) & wave2
            first.terminate()
            assert first.wait(30) == 0
            wait_for(lambda: held(second_out) == all_partitions, "the second consumer holds every partition")
            wave3 = await send_wave(localhub, "wave3")
            wait_for(lambda: wave3 <= bodies(second_out), "the second consumer got the third wave")
            second.terminate()
            assert second.wait(30) == 0
    assert wave1 | wave2 | wave3 <= bodies(first_out, second_out)
