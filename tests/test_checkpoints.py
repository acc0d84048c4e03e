"""Checkpoints, ownership and the pipeline state: written forward only, on a local directory and on Blob
Storage (Azurite)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore
from azure.storage.blob.aio import ContainerClient

from tests.servers import Azurite
from worker.checkpoints.store import BlobPartitionCheckpoint, DirectoryCheckpointStore, Stores, open_stores
from worker.core.state import SavedState
from worker.errors import SettingsError, StateError
from worker.events import Position
from worker.settings import CheckpointSettings, Scope

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


# --- claims and writes, on both stores --------------------------------------------------------------


@pytest.fixture(params=["directory", pytest.param("blob", marks=pytest.mark.integration)])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "directory":
        config = settings(directory=tmp_path / "checkpoints")
    else:
        azurite: Azurite = request.getfixturevalue("azurite")
        config = settings(connection_string=azurite.connection_string, container=f"claims-{uuid.uuid4().hex[:12]}")
    async with open_stores(config, SCOPE) as opened:
        yield opened


async def listed(stores: Stores) -> dict[str, tuple[str, int]]:
    """The checkpoints as the SDK reads them: what it starts from, and KEDA counts lag from."""
    found = await stores.checkpoints.list_checkpoints(SCOPE.namespace, SCOPE.eventhub, SCOPE.consumer_group)
    return {c["partition_id"]: (c["offset"], c["sequence_number"]) for c in found}


def at(sequence: int) -> Position:
    return Position("2", str(sequence * 100), sequence)


async def test_a_partition_without_a_checkpoint_has_no_state(stores: Stores) -> None:
    assert await stores.partitions.checkpoint("2").load() is None
    assert await listed(stores) == {}


async def test_the_state_is_written_with_the_checkpoint_and_read_back(stores: Stores) -> None:
    first = stores.partitions.checkpoint("2")
    await first.load()
    assert await first.write(at(7), STATE)
    assert await listed(stores) == {"2": ("700", 7)}
    assert await stores.partitions.checkpoint("2").load() == STATE


async def test_a_checkpoint_never_moves_back(stores: Stores) -> None:
    """A new owner that started from an older position than the checkpoint holds by the time it writes
    (the previous owner's write, delayed by an outage, landed meanwhile)."""
    new = stores.partitions.checkpoint("2")
    await new.load()  # nothing there yet: it starts from the first event
    old = stores.partitions.checkpoint("2")
    assert await old.write(at(88), STATE)  # the delayed write lands
    assert not await new.write(at(20), SavedState())  # skipped: every event up to 88 is finished
    assert await listed(stores) == {"2": ("8800", 88)}
    assert await stores.partitions.checkpoint("2").load() == STATE
    assert await new.write(at(90), SavedState())
    assert await listed(stores) == {"2": ("9000", 90)}
    assert not await old.write(at(89), STATE)  # and the previous owner's next write cannot go back either
    assert await listed(stores) == {"2": ("9000", 90)}


async def test_a_write_never_read_the_checkpoint_reads_it_first(stores: Stores) -> None:
    checkpoint = stores.partitions.checkpoint("2")  # not loaded: the store was down at the start
    assert await checkpoint.write(at(3), STATE)
    assert await listed(stores) == {"2": ("300", 3)}


@pytest.mark.integration
async def test_a_write_of_this_worker_that_landed_late_is_compared_as_any_other(azurite: Azurite) -> None:
    config = settings(connection_string=azurite.connection_string, container=f"late-{uuid.uuid4().hex[:12]}")
    async with open_stores(config, SCOPE) as stores:
        checkpoint = stores.partitions.checkpoint("2")
        assert isinstance(checkpoint, BlobPartitionCheckpoint)
        assert await checkpoint.write(at(4), STATE)
        stale = checkpoint._etag  # as a write that timed out here leaves it
        assert await checkpoint.write(at(6), STATE)
        checkpoint._etag, checkpoint.stored = stale, 4  # the write landed, but this worker never heard back
        assert not await checkpoint.write(at(5), STATE)  # read again: 6 is there
        assert await checkpoint.write(at(8), STATE)
        assert await listed(stores) == {"2": ("800", 8)}


async def test_a_corrupt_state_is_named_and_the_checkpoint_is_written_all_the_same(tmp_path: Path) -> None:
    async with open_stores(settings(directory=tmp_path), SCOPE) as stores:
        checkpoint = stores.partitions.checkpoint("0")
        assert await checkpoint.write(Position("0", "100", 1), STATE)
        (tmp_path / SCOPE.prefix("pipelinestate") / "0").write_bytes(b"{not json")
        again = stores.partitions.checkpoint("0")
        with pytest.raises(StateError, match=r"pipelinestate/0: the pipeline state is unreadable"):
            await again.load()
        assert await again.write(Position("0", "200", 2), STATE)


@pytest.mark.integration
async def test_blob_stores_create_the_container_and_keep_the_sdk_layout(azurite: Azurite) -> None:
    config = settings(connection_string=azurite.connection_string, container="fresh-container")
    async with open_stores(config, SCOPE) as stores:
        assert isinstance(stores.checkpoints, BlobCheckpointStore)
        await stores.partitions.checkpoint("2").write(Position("2", "42", 7), STATE)
    # Opening again finds the container there; nothing is lost.
    async with open_stores(config, SCOPE) as stores:
        assert await stores.partitions.checkpoint("2").load() == STATE
        assert await listed(stores) == {"2": ("42", 7)}
    async with ContainerClient.from_connection_string(azurite.connection_string, "fresh-container") as container:
        names = [blob.name async for blob in container.list_blobs()]
        properties = await container.get_blob_client(SCOPE.prefix("checkpoint") + "2").get_blob_properties()
    # KEDA's blobMetadata strategy reads the sequence number from the metadata; the state is the content.
    assert names == [SCOPE.prefix("checkpoint") + "2"]
    assert (properties.metadata["offset"], properties.metadata["sequencenumber"]) == ("42", "7")


@pytest.mark.integration
async def test_a_state_kept_where_earlier_versions_kept_it_is_read(azurite: Azurite) -> None:
    config = settings(connection_string=azurite.connection_string, container=f"legacy-{uuid.uuid4().hex[:12]}")
    async with open_stores(config, SCOPE) as stores:
        async with ContainerClient.from_connection_string(azurite.connection_string, config.container) as container:
            await container.upload_blob(SCOPE.prefix("pipelinestate") + "2", STATE.to_json())
            old = container.get_blob_client(SCOPE.prefix("checkpoint") + "2")
            await old.upload_blob(b"", metadata={"offset": "42", "sequencenumber": "7"})
        assert await stores.partitions.checkpoint("2").load() == STATE
        assert await listed(stores) == {"2": ("42", 7)}


async def test_a_checkpoint_directory_that_cannot_be_made_is_a_settings_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SettingsError, match="cannot create"):
        async with open_stores(settings(directory=blocker / "sub"), SCOPE):
            pass


async def test_a_worker_attends_renews_and_leaves_the_roster(stores: Stores) -> None:
    roster = stores.roster
    assert await roster.members() == []
    before = time.time() - 5  # the storage's clock and this one's
    await roster.attend("m1", "")
    await roster.attend("m2", "owner-2")
    first = {m.member_id: m for m in await roster.members()}
    assert {m: first[m].owner_id for m in first} == {"m1": "", "m2": "owner-2"}
    assert all(m.modified >= before for m in first.values())
    await roster.attend("m1", "owner-1")  # its first claims: the id it owns under
    assert {m.member_id: m.owner_id for m in await roster.members()} == {"m1": "owner-1", "m2": "owner-2"}
    await roster.leave("m2")
    await roster.leave("m2")  # gone already
    assert [m.member_id for m in await roster.members()] == ["m1"]


@pytest.mark.integration
async def test_the_roster_is_beside_the_sdk_layout_and_out_of_its_listings(azurite: Azurite) -> None:
    """The SDK lists ownership and checkpoints by their prefixes: attendance is in neither."""
    container = f"roster-{uuid.uuid4().hex[:8]}"
    async with open_stores(settings(connection_string=azurite.connection_string, container=container), SCOPE) as stores:
        await stores.roster.attend("m1", "o1")
        assert list(await stores.checkpoints.list_ownership(SCOPE.namespace, SCOPE.eventhub, "$Default")) == []
        async with ContainerClient.from_connection_string(azurite.connection_string, container) as client:
            names = [blob.name async for blob in client.list_blobs()]
    assert f"{SCOPE.prefix('worker')}members/m1" in names
