"""The demo on the embedded default: the live worker against a local hub, in one process.

A local hub starts in-process; realistic Azure ML events are published to it as Event Grid
delivers them (shuffled, some twice, keyed by subject), with a few from another workspace, some
in the CloudEvents schema and one malformed body; then ``worker run`` processes them with the demo
rules, checkpointing to a local directory, until everything is finished and the hub is quiet.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from worker.config import RunSettings
from worker.core.accounting import Tally
from worker.live.run import run_worker
from worker.localhub.hub import LocalHub
from worker.localhub.store import HubSpec
from worker.sending import mlevents
from worker.sending.publish import Outgoing, plan, publish

DEMO_HUB = "ml-events"
DEMO_PARTITIONS = 4


@dataclass(frozen=True, slots=True)
class DemoSettings:
    rules: tuple[Path, ...]
    #: Checkpoints and dead letters go here.
    workdir: Path
    events: int = 400
    seed: int = 7


async def live_demo(settings: DemoSettings) -> Tally:
    """Publish the demo's events to an in-process local hub and run the worker until idle."""
    # A new hub each time: checkpoints of an earlier demo would point past its events.
    shutil.rmtree(settings.workdir / "checkpoints", ignore_errors=True)
    async with LocalHub([HubSpec(DEMO_HUB, DEMO_PARTITIONS, ("$Default",))]) as hub:
        messages = [*plan(mlevents.sample_deliveries(settings.events, settings.seed), "subject")]
        messages.append(Outgoing(b'{"eventType": "truncated', {}, None))  # as a misconfigured publisher sends
        await publish(hub.connection_string(), messages)
        run = RunSettings.explicit(
            eventhub_connection_string=hub.connection_string(),
            checkpoint_dir=settings.workdir / "checkpoints",
            dead_letters=str(settings.workdir / "dead-letters"),
            rules=settings.rules,
            idle_exit=1.0,
            reorder_window=2.0,
            load_balancing_interval=1.0,
            http_port=0,
        )
        return await run_worker(run)
