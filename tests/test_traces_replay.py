"""``replay --trace``: a replay traced as the live worker is, in one process or several; without an
exporter to send to, a clear error."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.otlp import otlp_receiver
from tests.servers import ROOT
from worker.actions.base import PlannedAction
from worker.actions.secrets import Placeholders
from worker.replay.run import LogProgress, ReplaySettings
from worker.replay.run import replay as replay_in_process
from worker.replay.sources import plan_replay
from worker.rulefiles.loading import load_rules

pytestmark = pytest.mark.integration

EXAMPLES = ROOT / "rules" / "examples.yaml"
SAMPLE = ROOT / "worker" / "samples" / "capture"


async def replay(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        "replay",
        "--dry-run",
        "--log-level",
        "error",
        "--rules",
        str(EXAMPLES),
        "--report",
        str(tmp_path / "report.json"),
        *args,
        str(SAMPLE),
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    return await process.wait(), err.decode()


@pytest.mark.parametrize("processes", ["1", "2"])
async def test_a_traced_replay_sends_a_span_per_event_acted_on(tmp_path: Path, processes: str) -> None:
    async with otlp_receiver() as receiver:
        code, err = await replay(
            tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}, "--trace", "--processes", processes
        )
        assert code == 0, err
        # Every span is sent before the replay exits: none is still on its way.
        spans = receiver.spans
    planned = await planned_actions()
    events = [span for span in spans if span.name == "process"]
    assert Counter(span.attributes["cloudevents.event_id"] for span in events) == Counter(
        {event_id for event_id, memo in planned if memo is None}
    )
    # The rules that remember fired in spans of their own: the digest's notifications and the expiries.
    fired = Counter(span.name.split()[0] for span in spans if span.name != "process")
    assert fired == Counter(memo for _, memo in planned if memo is not None)
    assert {span.resource["azml_worker.process"] for span in spans} == {"replay"}


async def planned_actions() -> set[tuple[str, str | None]]:
    """What a dry run of the sample plans, in this process, untraced: (event id, ``expire`` or
    ``notify`` for a rule that remembers)."""
    table = load_rules([EXAMPLES], env=Placeholders())
    planned: set[tuple[str, str | None]] = set()

    def observe(action: PlannedAction) -> None:
        memo = action.memo
        kind = None if memo is None else ("expire" if memo.kind == "expiry" else "notify")
        planned.add((action.event.id if memo is None else memo.id, kind))

    with plan_replay([str(SAMPLE)], dead_letters=False) as plan:
        await replay_in_process(plan, table, ReplaySettings(dry_run=True), LogProgress(1), observe=observe)
    return planned


async def test_trace_without_an_exporter_is_an_error_naming_the_variables(tmp_path: Path) -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "",
        "OTEL_TRACES_EXPORTER": "",
    }
    code, err = await replay(tmp_path, environ, "--trace")
    assert code == 2
    assert "--trace: no exporter to send the spans to: set OTEL_EXPORTER_OTLP_ENDPOINT" in err
