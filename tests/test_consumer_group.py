"""A consumer group of workers as they are deployed: several replicas started at the same moment on a
hub nobody has claimed, and a group KEDA scales out and in, with one worker killed. Subprocesses on
the local hub, checkpoints on the strict storage bed."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.live import events, ids_of, wait_for
from tests.servers import Azurite
from tests.together import Acted, start_together, streamed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300), pytest.mark.usefixtures("sdk_garbage")]

#: A balancing interval that leaves a busy machine time for the peers' first rounds, which the start
#: gate lets through as soon as the first worker has claimed (tests/start_gate.py); the settle time is
#: left at its default (1.5 intervals).
INTERVAL = 3.0


@pytest.mark.parametrize("seed", [1, 2])
async def test_workers_started_together_act_on_every_event_once(tmp_path: Path, azurite: Azurite, seed: int) -> None:
    """Four workers started at the same moment on 8 unclaimed partitions, a stream from the first
    second: the first to claim takes every partition and its peers take their shares from it, but a
    partition taken from it had acted on nothing, so each event is acted on once."""
    start = await start_together(tmp_path, azurite, seed=seed, settings={"load_balancing_interval": INTERVAL})
    assert start.acted.repeats() == {}
    assert start.steals, "no partition moved at the start: nothing was shown"
    assert all(leave.settled is False for leave in start.steals), start.steals


async def test_with_the_settling_off_each_event_acted_on_twice_is_traced_to_a_steal(
    tmp_path: Path, azurite: Azurite
) -> None:
    """The same start acting at each claim at once: the events a worker acted on before a peer took
    their partition are acted on again by the peer, each explained by that move, with the same key."""
    start = await start_together(tmp_path, azurite, settings={"load_balancing_interval": INTERVAL, "claim_settle": 0})
    assert start.steals
    assert start.unexplained() == []
    assert all(len(keys) == 1 for keys in start.acted.keys.values())


async def test_a_group_scaled_out_and_in_with_a_worker_killed_loses_nothing(tmp_path: Path, azurite: Azurite) -> None:
    """As KEDA drives it, on 32 partitions with a stream: one worker, then four (three started at once),
    one stopped (SIGTERM), one killed, one more started. Nothing is lost; an event acted on twice was in
    flight when its partition moved between the two workers, with the same idempotency key; a killed
    worker's partitions are owned again within the ownership expiry plus one balancing interval."""
    interval, expiry, partitions = 1.0, 4.0, 32
    published = events(6000, seed=32, duplicates=0)
    settings = {"load_balancing_interval": interval, "ownership_expiry": expiry}
    async with streamed(
        tmp_path, azurite, "scaled", partitions=partitions, published=published, per_second=150, settings=settings
    ) as stream:
        group = stream.group

        async def owned_by(names: list[str], share: int = 1) -> bool:
            """Every partition owned by these workers, each owning at least ``share``."""
            counts = await stream.owners()
            ids = {group.owner_id(name) for name in names}
            return sum(counts.values()) == partitions and set(counts) == ids and min(counts.values()) >= share

        await group.start("w0")
        await wait_for(lambda: owned_by(["w0"]), 60, "the first worker to own every partition")
        await group.start("w1", "w2", "w3")  # scaled out: 1 -> 4
        await wait_for(lambda: owned_by(["w0", "w1", "w2", "w3"], 8), 120, "the 32 partitions spread over 4")
        assert await group.stop("w1") == 0  # scaled in: its partitions released, and claimed at once
        await wait_for(lambda: owned_by(["w0", "w2", "w3"]), 10 * interval, "w1's partitions to be claimed")
        assert await group.stop("w2", signal.SIGKILL) == -signal.SIGKILL
        # Its ownership expires within the expiry of its last renewal, and the survivors claim at
        # their next round; two survivors may pick the same partition, one claim is then refused
        # and made at the round after: one interval more, and one for the claims' round trips.
        await wait_for(lambda: owned_by(["w0", "w3"]), expiry + 3 * interval, "w2's partitions to be owned again")
        await group.start("w4")
        await wait_for(lambda: owned_by(["w0", "w3", "w4"], 10), 120, "the new worker to take its share")
        await stream.sending

        async def all_acted() -> bool:
            return set(Acted.of(group).by_event) >= ids_of(published)

        await wait_for(all_acted, 120, "every event to be acted on")
    acted = Acted.of(group)
    assert set(acted.by_event) == ids_of(published)  # nothing lost
    leaves = group.leaves()
    assert acted.unexplained(group.tenures(), leaves) == []  # each repeat: in flight when its partition moved
    assert all(len(keys) == 1 for keys in acted.keys.values())
    assert {leave.why for leave in leaves} >= {"shutdown", "killed", "ownership_lost"}
