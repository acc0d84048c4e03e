"""Shadow runs (``run --dry-run``) beside the workers that act, on the test bed: they act on nothing,
count every action as planned, and never touch the acting workers' consumer group."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import pytest
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore
from azure.storage.blob.aio import ContainerClient
from structlog.testing import capture_logs

from tests.live import RULES, Actions, events, ids_of, live_settings, metrics_of, send, wait_for, worker_env
from tests.servers import Azurite, free_port
from worker.actions.base import ActionFate
from worker.config import RunSettings
from worker.errors import SettingsError
from worker.live.run import run_worker
from worker.localhub.hub import LocalHub
from worker.localhub.store import HubSpec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180), pytest.mark.usefixtures("sdk_garbage")]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules.yaml").write_text(RULES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config(hub: LocalHub, azurite: Azurite, container: str, rules: Path, **changes: object) -> RunSettings:
    values = live_settings(hub.connection_string(), azurite, container, rules)
    values.update(pipeline_process=False)
    values.update(changes)
    return RunSettings.explicit(**values)


async def ownership(azurite: Azurite, container: str, namespace: str, hub: str, group: str) -> dict[str, str]:
    async with BlobCheckpointStore.from_connection_string(azurite.connection_string, container) as store:
        found = await store.list_ownership(namespace, hub, group)
    return {str(o["partition_id"]): str(o["owner_id"]) for o in found}


async def checkpoints(azurite: Azurite, container: str, namespace: str, hub: str, group: str) -> dict[str, int]:
    async with BlobCheckpointStore.from_connection_string(azurite.connection_string, container) as store:
        found = await store.list_checkpoints(namespace, hub, group)
    return {str(c["partition_id"]): int(c["sequence_number"]) for c in found}


async def test_a_shadow_run_beside_acting_workers_acts_on_nothing_and_counts_every_action_as_planned(
    workdir: Path, azurite: Azurite
) -> None:
    container = f"shadow-{uuid.uuid4().hex[:12]}"
    published = events(300, seed=41)
    async with LocalHub([HubSpec("shadowed", 2, ("$Default", "shadow"))]) as hub:
        namespace = f"127.0.0.1:{hub.port}"
        report = await send(hub, published)
        acting = config(hub, azurite, container, workdir / "rules.yaml")
        port = free_port()
        shadow = config(
            hub, azurite, container, workdir / "rules.yaml", consumer_group="shadow", dry_run=True, http_port=port
        )
        stop = asyncio.Event()
        with capture_logs() as logs:
            shadowing = asyncio.create_task(run_worker(shadow, stop))
            acting_run = asyncio.create_task(run_worker(acting, stop))

            async def all_done() -> bool:
                lines = Actions.read(workdir / "actions.jsonl").lines
                planned = (await metrics_of(port)).get("azml_worker_actions_total:planned")
                return len(lines) == len(ids_of(published)) and planned == len(ids_of(published))

            await wait_for(all_done, 60, "the acting worker to act on every event and the shadow run to plan them")
            # Both hold their partitions now: each group has its own owner.
            acting_owners = await ownership(azurite, container, namespace, "shadowed", "$Default")
            shadow_owners = await ownership(azurite, container, namespace, "shadowed", "shadow")
            stop.set()
            shadowed, acted = await shadowing, await acting_run

        assert len(acting_owners) == len(shadow_owners) == 2
        assert len(set(acting_owners.values())) == len(set(shadow_owners.values())) == 1
        assert set(acting_owners.values()).isdisjoint(shadow_owners.values())

        # The acting worker acted on every event once; the shadow run on none.
        lines = Actions.read(workdir / "actions.jsonl")
        assert set(lines.per_event) == ids_of(published)
        assert max(lines.per_event.values()) == 1
        assert {fate for (_, _, fate) in acted.actions} == {ActionFate.DONE}
        assert {fate for (_, _, fate) in shadowed.actions} == {ActionFate.PLANNED}
        assert sum(shadowed.actions.values()) == sum(acted.actions.values()) == len(ids_of(published))
        assert shadowed.check() == []
        planned_lines = [entry for entry in logs if entry["event"] == "action.planned"]
        assert {entry["event_id"] for entry in planned_lines} == ids_of(published)

        # Each group has its own checkpoints; the acting group's are where the acting worker left them.
        expected = {p: n - 1 for p, n in report.by_partition.items() if n}
        assert await checkpoints(azurite, container, namespace, "shadowed", "$Default") == expected
        assert await checkpoints(azurite, container, namespace, "shadowed", "shadow") == expected
        released = await ownership(azurite, container, namespace, "shadowed", "$Default")

        # A shadow run refuses the acting workers' group, and an acting worker the shadow group.
        with pytest.raises(SettingsError, match=r"consumer group '\$Default' belongs to workers that act"):
            await run_worker(config(hub, azurite, container, workdir / "rules.yaml", dry_run=True, idle_exit=1.0))
        with pytest.raises(SettingsError, match=r"consumer group 'shadow' belongs to dry runs"):
            await run_worker(config(hub, azurite, container, workdir / "rules.yaml", consumer_group="shadow"))
        assert await ownership(azurite, container, namespace, "shadowed", "$Default") == released
        assert await checkpoints(azurite, container, namespace, "shadowed", "$Default") == expected


async def test_a_shadow_run_refuses_a_group_that_acting_workers_used_before_marks(
    tmp_path: Path, azurite: Azurite
) -> None:
    """Checkpoints with no mark were written by acting workers: the command line says so and exits 2."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    container = f"unmarked-{uuid.uuid4().hex[:12]}"
    async with LocalHub([HubSpec("unmarked", 1, ("$Default",))]) as hub:
        namespace = f"127.0.0.1:{hub.port}"
        async with ContainerClient.from_connection_string(azurite.connection_string, container) as blobs:
            await blobs.create_container()
        async with BlobCheckpointStore.from_connection_string(azurite.connection_string, container) as store:
            await store.update_checkpoint(
                {
                    "fully_qualified_namespace": namespace,
                    "eventhub_name": "unmarked",
                    "consumer_group": "$Default",
                    "partition_id": "0",
                    "offset": "0",
                    "sequence_number": 0,
                }
            )
        env = worker_env(hub, azurite, container, rules, dry_run="true")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker", "run", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(60):
            _, stderr = await process.communicate()
    assert process.returncode == 2
    assert "consumer group '$Default' belongs to workers that act" in stderr.decode()
