"""Checkpoint, ownership and pipeline-state stores: a local directory, and Blob Storage on Azurite."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore
from azure.storage.blob.aio import ContainerClient

from tests.servers import Azurite
from worker.checkpoints import DirectoryCheckpointStore, DirectoryStateStore, open_stores
from worker.errors import SettingsError, StateError
from worker.settings import CheckpointSettings, Scope
from worker.state import SavedState

SCOPE = Scope("MyNamespace.servicebus.windows.net", "ML-Events", "$Default")
STATE = SavedState(
    last_keys=(("models/m:1", (0, 1_700_000_000_000_000, 7, 0)),), recent_ids=("a", "b"), finished_beyond=("c",)
)


def ownership(partition: str, owner: str, etag: str | None = None) -> dict[str, object]:
    return {
        "fully_qualified_namespace": SCOPE.namespace,
        "eventhub_name": SCOPE.eventhub,
        "consumer_group": SCOPE.consumer_group,
        "partition_id": partition,
        "owner_id": owner,
        "etag": etag,
    }


def settings(**changes: object) -> CheckpointSettings:
    fields: dict[str, object] = {
        "connection_string": None,
        "account_url": None,
        "container": "checkpoints",
        "directory": None,
        "interval": 10.0,
        "events": 1000,
    }
    fields.update(changes)
    return CheckpointSettings(**fields)  # type: ignore[arg-type]


async def test_directory_ownership_is_compare_and_swap(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    first = list(await store.claim_ownership([ownership("0", "a"), ownership("1", "a")]))
    assert [o["partition_id"] for o in first] == ["0", "1"]
    # Another worker claims partition 0 with what it listed before a's claim: refused.
    assert list(await store.claim_ownership([ownership("0", "b")])) == []
    listed = {o["partition_id"]: o for o in await store.list_ownership(SCOPE.namespace, SCOPE.eventhub, "$Default")}
    assert listed["0"]["owner_id"] == "a"
    # With the current ETag the claim goes through, and the old ETag is then stale.
    taken = list(await store.claim_ownership([ownership("0", "b", listed["0"]["etag"])]))
    assert taken[0]["owner_id"] == "b"
    assert list(await store.claim_ownership([ownership("0", "a", listed["0"]["etag"])])) == []
    assert isinstance(taken[0]["last_modified_time"], float)


async def test_directory_checkpoints_round_trip(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    assert list(await store.list_checkpoints(SCOPE.namespace, SCOPE.eventhub, SCOPE.consumer_group)) == []
    for sequence in (5, 9):
        await store.update_checkpoint(
            {**ownership("3", "a"), "offset": str(sequence * 100), "sequence_number": sequence}  # type: ignore[dict-item]
        )
    [checkpoint] = await store.list_checkpoints(SCOPE.namespace, SCOPE.eventhub, SCOPE.consumer_group)
    assert (checkpoint["partition_id"], checkpoint["offset"], checkpoint["sequence_number"]) == ("3", "900", 9)
    # The blob store's layout, lower-cased, so the two can be compared and inspected alike.
    assert (tmp_path / "mynamespace.servicebus.windows.net/ml-events/$default/checkpoint/3").is_file()


async def test_directory_state_round_trips_and_a_corrupt_one_is_named(tmp_path: Path) -> None:
    states = DirectoryStateStore(tmp_path, SCOPE)
    assert await states.load("0") is None
    await states.save("0", STATE)
    assert await states.load("0") == STATE
    path = tmp_path / SCOPE.prefix("pipelinestate") / "0"
    path.write_bytes(b"{not json")
    with pytest.raises(StateError, match=r"pipelinestate/0: the pipeline state is unreadable"):
        await states.load("0")


@pytest.mark.integration
async def test_blob_stores_create_the_container_and_keep_the_sdk_layout(azurite: Azurite) -> None:
    config = settings(connection_string=azurite.connection_string, container="fresh-container")
    async with open_stores(config, SCOPE) as stores:
        assert isinstance(stores.checkpoints, BlobCheckpointStore)
        await stores.checkpoints.update_checkpoint({**ownership("2", "a"), "offset": "42", "sequence_number": 7})
        assert await stores.states.load("2") is None
        await stores.states.save("2", STATE)
        assert await stores.states.load("2") == STATE
    # Opening again finds the container there; nothing is lost.
    async with open_stores(config, SCOPE) as stores:
        assert await stores.states.load("2") == STATE
        [checkpoint] = await stores.checkpoints.list_checkpoints(SCOPE.namespace, SCOPE.eventhub, SCOPE.consumer_group)
        assert (checkpoint["sequence_number"], checkpoint["offset"]) == (7, "42")
    async with ContainerClient.from_connection_string(azurite.connection_string, "fresh-container") as container:
        names = [blob.name async for blob in container.list_blobs()]
    assert sorted(names) == [SCOPE.prefix("checkpoint") + "2", SCOPE.prefix("pipelinestate") + "2"]


async def test_a_checkpoint_directory_that_cannot_be_made_is_a_settings_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SettingsError, match="cannot create"):
        async with open_stores(settings(directory=blocker / "sub"), SCOPE):
            pass
