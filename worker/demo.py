"""The demo on the embedded default: the live worker against a local hub, in one process.

A local hub starts in-process; realistic Azure ML events are published to it as Event Grid
delivers them (shuffled, some twice, keyed by subject), with a few from another workspace, some
in the CloudEvents schema and one malformed body; then ``worker run`` processes them with the demo
rules, checkpointing to a local directory, until everything is finished and the hub is quiet.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from worker import mlevents
from worker.accounting import Tally
from worker.config import RunSettings
from worker.run import run_worker

DEMO_HUB = "ml-events"
DEMO_PARTITIONS = 4


@dataclass(frozen=True, slots=True)
class DemoSettings:
    rules: tuple[Path, ...]
    #: Checkpoints and dead letters go here.
    workdir: Path
    events: int = 400
    seed: int = 7


def demo_deliveries(count: int, seed: int) -> list[mlevents.Delivery]:
    """The demo's messages: ``count`` events of the demo workspace, 8 of another, 8 CloudEvents."""
    sandbox = mlevents.DEFAULT_TOPIC.replace("ml-prod", "ml-sandbox")
    events = chain(
        mlevents.generate(count, mlevents.Options(seed=seed)),
        mlevents.generate(8, mlevents.Options(seed=seed + 1, topic=sandbox)),
        mlevents.generate(8, mlevents.Options(seed=seed + 2, schema="cloudevents")),
    )
    ordered = sorted(events, key=lambda e: str(e.get("eventTime") or e.get("time")))
    return list(mlevents.deliveries(ordered, shuffle=6, duplicates=0.05, seed=seed))


async def live_demo(settings: DemoSettings) -> Tally:
    """Publish the demo's events to an in-process local hub and run the worker until idle."""
    from worker.localhub.hub import LocalHub  # noqa: PLC0415 - the localhub extra, needed here only
    from worker.localhub.store import HubSpec  # noqa: PLC0415
    from worker.publish import Outgoing, plan, publish  # noqa: PLC0415

    # A new hub each time: checkpoints of an earlier demo would point past its events.
    shutil.rmtree(settings.workdir / "checkpoints", ignore_errors=True)
    async with LocalHub([HubSpec(DEMO_HUB, DEMO_PARTITIONS, ("$Default",))]) as hub:
        messages = [*plan(demo_deliveries(settings.events, settings.seed), "subject")]
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
