"""Replay sources: local files and directories, container URLs, and blob containers on Azurite."""

from __future__ import annotations

import io
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

from tests.servers import ACCOUNT, ACCOUNT_KEY, Azurite, ServerError, start_azurite
from worker.blob_urls import ContainerUrl, parse_container_url
from worker.errors import CaptureError, SourceError
from worker.events import Message
from worker.replay.capture import number_messages, write_capture
from worker.replay.sources import MAX_WINDOW, SKIP_MARGIN, Plan, iter_messages, plan_sources
from worker.sending import mlevents

START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)


def _capture(messages: list[Message], codec: str = "null") -> bytes:
    stream = io.BytesIO()
    write_capture(stream, messages, codec=codec)  # type: ignore[arg-type]
    return stream.getvalue()


def _layout(partition: str, window: datetime, hub: str = "ns/hub") -> str:
    return f"{hub}/{partition}/{window:%Y/%m/%d/%H/%M/%S}.avro"


def _windows(partition: str, count: int, per_window: int, *, seed: int = 7) -> Iterator[tuple[str, list[Message]]]:
    """``count`` consecutive five-minute capture windows of one partition, each with its messages."""
    bodies = list(mlevents.bodies(count * per_window, mlevents.Options(seed=seed)))
    step = WINDOW / per_window
    messages = list(number_messages(bodies, start=START, step=step, partition_id=partition))
    for index in range(count):
        yield _layout(partition, START + index * WINDOW), messages[index * per_window : (index + 1) * per_window]


def _write_tree(root: Path, files: dict[str, list[Message]]) -> None:
    for name, messages in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_capture(messages))


def _read_all(plan: Plan) -> dict[str, list[Message]]:
    return {
        partition: [message for file in files for message in plan.messages(file)]
        for partition, files in plan.partitions.items()
    }


# -- local files and directories ----------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, list[Message]]:
    """Two partitions of three windows each, nested deep, plus a file outside the layout."""
    files = dict(_windows("0", 3, 4)) | dict(_windows("1", 3, 4, seed=8))
    files["loose/renamed-p9.avro"] = next(_windows("9", 1, 2, seed=9))[1]
    _write_tree(tmp_path / "capture", files)
    (tmp_path / "capture" / "ns" / "notes.txt").write_text("not a capture file")
    return files


def test_a_directory_is_searched_recursively(tmp_path: Path, tree: dict[str, list[Message]]) -> None:
    root = tmp_path / "capture"
    loose = str(root / "loose" / "renamed-p9.avro")
    zero = sorted(name for name in tree if name.startswith("ns/hub/0/"))

    with plan_sources([str(root)]) as plan:
        assert list(plan.partitions) == ["0", "1", loose]
        assert [file.name for file in plan.partitions["0"]] == [str(root / name) for name in zero]
        assert [file.window_start for file in plan.partitions["1"]] == [START, START + WINDOW, START + 2 * WINDOW]
        assert plan.partitions[loose][0].window_start is None
        assert plan.total_bytes == sum(path.stat().st_size for path in root.rglob("*.avro"))
        messages = _read_all(plan)

    assert [m.position.sequence_number for m in messages["0"]] == list(range(12))
    assert messages["0"] == [m for name in zero for m in tree[name]]
    # the file outside the layout is a partition of its own, named by the file
    assert messages[loose] == [
        m._replace(position=m.position._replace(partition_id=loose)) for m in tree["loose/renamed-p9.avro"]
    ]


def test_partitions_are_selected(tmp_path: Path, tree: dict[str, list[Message]]) -> None:
    root = str(tmp_path / "capture")

    with plan_sources([root], partitions={"1"}) as plan:
        assert list(plan.partitions) == ["1"]
        assert len(plan.files) == 3
    with plan_sources([root], partitions={"7"}) as plan:
        assert plan.partitions == {}
        assert plan.total_bytes == 0


def test_partitions_in_numeric_order_and_files_in_time_order_across_sources(tmp_path: Path) -> None:
    files: dict[str, list[Message]] = {
        "a/" + _layout("10", START): [],
        "a/" + _layout("2", START + WINDOW): [],
        "b/" + _layout("2", START, hub="other-ns/hub"): [],
    }
    _write_tree(tmp_path, files)

    with plan_sources([str(tmp_path / "a"), str(tmp_path / "b")]) as plan:
        assert list(plan.partitions) == ["2", "10"]
        assert [Path(file.name).relative_to(tmp_path).parts[0] for file in plan.partitions["2"]] == ["b", "a"]


def test_a_file_named_twice_is_planned_once(tmp_path: Path, tree: dict[str, list[Message]]) -> None:
    root = tmp_path / "capture"
    one = root / sorted(tree)[-1]

    with plan_sources([str(root), str(one)]) as plan:
        assert len(plan.files) == len(tree)


def test_a_single_file_of_any_name(tmp_path: Path) -> None:
    path = tmp_path / "export.bin"
    messages = next(_windows("0", 1, 3))[1]
    path.write_bytes(_capture(messages, "deflate"))

    with plan_sources([str(path)]) as plan:
        [file] = plan.files
        assert file.partition_id == str(path)
        assert file.size == path.stat().st_size
        assert [m.body for m in iter_messages(file)] == [m.body for m in messages]


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (START + timedelta(minutes=31), START + timedelta(minutes=44, seconds=30)),
        (START + timedelta(minutes=30), None),
        (None, START + timedelta(minutes=10)),
        (START + timedelta(minutes=47, seconds=30), START + timedelta(minutes=47, seconds=30)),  # empty range
        (START - timedelta(days=1), START + timedelta(days=1)),
    ],
)
def test_a_time_range_skips_files_only_when_safe(
    tmp_path: Path, since: datetime | None, until: datetime | None
) -> None:
    files = dict(_windows("0", 12, 10))  # one hour of five-minute windows, a message every 30 s
    _write_tree(tmp_path, files)
    everything = [m for name in sorted(files) for m in files[name]]
    expected = [
        m
        for m in everything
        if m.position.enqueued_time is not None
        and (since is None or m.position.enqueued_time >= since)
        and (until is None or m.position.enqueued_time < until)
    ]

    with plan_sources([str(tmp_path)], since=since, until=until) as plan:
        got = [m for file in plan.files for m in plan.messages(file)]
        windows = [file.window_start for file in plan.files]

    assert [m.position.sequence_number for m in got] == [m.position.sequence_number for m in expected]
    assert plan.skipped + len(windows) == 12
    for window in windows:  # every file kept may hold a record in range
        assert window is not None
        assert until is None or window - SKIP_MARGIN < until
        assert since is None or window + MAX_WINDOW + SKIP_MARGIN > since


def test_the_time_range_bounds_are_inclusive_then_exclusive(tmp_path: Path) -> None:
    [(name, messages)] = _windows("0", 1, 5)
    _write_tree(tmp_path, {name: messages})
    times = [m.position.enqueued_time for m in messages]
    assert times[1] is not None
    assert times[3] is not None

    with plan_sources([str(tmp_path)], since=times[1], until=times[3]) as plan:
        [file] = plan.files
        assert [m.position.enqueued_time for m in plan.messages(file)] == times[1:3]


def test_a_time_range_needs_time_zones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no time zone"):
        plan_sources([str(tmp_path)], since=START.replace(tzinfo=None))


def test_a_missing_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")

    with pytest.raises(SourceError, match=rf"^{missing}: no such file or directory"):
        plan_sources([missing])


def test_a_directory_without_capture_files(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")

    with pytest.raises(SourceError, match=rf"^{tmp_path}: no \.avro files found"):
        plan_sources([str(tmp_path)])


def test_a_broken_file_is_named_when_read(tmp_path: Path) -> None:
    broken = tmp_path / _layout("0", START)
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not avro")

    with plan_sources([str(tmp_path)]) as plan:
        [file] = plan.files
        with pytest.raises(CaptureError, match=rf"^{broken}: not an Avro file"):
            list(plan.messages(file))


def test_a_file_gone_since_planning(tmp_path: Path) -> None:
    [(name, messages)] = _windows("0", 1, 2)
    _write_tree(tmp_path, {name: messages})

    with plan_sources([str(tmp_path)]) as plan:
        [file] = plan.files
        (tmp_path / name).unlink()
        with pytest.raises(SourceError, match=rf"^{tmp_path / name}: cannot open"):
            list(plan.messages(file))


# -- container URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://acct.blob.core.windows.net/capture",
            ContainerUrl("https://acct.blob.core.windows.net", "capture", ""),
        ),
        (
            "https://acct.blob.core.windows.net/capture/",
            ContainerUrl("https://acct.blob.core.windows.net", "capture", ""),
        ),
        (
            "https://acct.blob.core.windows.net/capture/ns/hub/",
            ContainerUrl("https://acct.blob.core.windows.net", "capture", "ns/hub/"),
        ),
        (
            "https://acct.blob.core.windows.net/capture/ns/hub/0/2026/11/01/09/00/00.avro",
            ContainerUrl("https://acct.blob.core.windows.net", "capture", "ns/hub/0/2026/11/01/09/00/00.avro"),
        ),
        (
            "https://acct.blob.core.chinacloudapi.cn/capture/a%20b",
            ContainerUrl("https://acct.blob.core.chinacloudapi.cn", "capture", "a b"),
        ),
        (
            "https://acct.blob.core.windows.net/capture/ns?sv=2025-11-05&sig=abc",
            ContainerUrl("https://acct.blob.core.windows.net", "capture", "ns", "sv=2025-11-05&sig=abc"),
        ),
        (
            "http://127.0.0.1:10000/devstoreaccount1/capture/ns/hub",
            ContainerUrl("http://127.0.0.1:10000/devstoreaccount1", "capture", "ns/hub"),
        ),
        (
            "http://localhost:10000/devstoreaccount1/capture",
            ContainerUrl("http://localhost:10000/devstoreaccount1", "capture", ""),
        ),
        (
            "http://azurite:10000/devstoreaccount1/capture/x",
            ContainerUrl("http://azurite:10000/devstoreaccount1", "capture", "x"),
        ),
        (
            "http://[::1]:10000/devstoreaccount1/capture",
            ContainerUrl("http://[::1]:10000/devstoreaccount1", "capture", ""),
        ),
        ("https://acct.blob.core.windows.net/$root", ContainerUrl("https://acct.blob.core.windows.net", "$root", "")),
    ],
)
def test_parse_container_url(url: str, expected: ContainerUrl) -> None:
    assert parse_container_url(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://acct.blob.core.windows.net/capture", "not a blob container URL"),
        ("abfss://capture@acct.dfs.core.windows.net/ns", "not a blob container URL"),
        ("https:///capture", "names no host"),
        ("https://acct.blob.core.windows.net", "names no container"),
        ("https://acct.blob.core.windows.net/", "names no container"),
        ("https://acct.blob.core.windows.net//ns", "names no container"),
        ("http://127.0.0.1:10000/", "names no storage account"),
        ("http://127.0.0.1:10000/devstoreaccount1", "names no container"),
        ("https://acct.blob.core.windows.net/Capture", "'Capture' is not a container name"),
        ("https://acct.blob.core.windows.net/ab", "'ab' is not a container name"),
        ("https://acct.blob.core.windows.net/a--b", "'a--b' is not a container name"),
        ("https://acct.blob.core.windows.net/-ab", "'-ab' is not a container name"),
    ],
)
def test_a_malformed_url(url: str, says: str) -> None:
    with pytest.raises(SourceError, match=says) as caught:
        plan_sources([url])

    assert str(caught.value).startswith(url)


def test_an_http_url_needs_a_key_or_sas() -> None:
    with pytest.raises(SourceError, match="http:// URL needs a connection string or a SAS token"):
        plan_sources(["http://127.0.0.1:9/devstoreaccount1/capture"])


# -- blob containers on Azurite ------------------------------------------------------------------


def test_a_missing_azurite_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match=r"Azurite is not installed .*run `make setup`"):
        start_azurite(tmp_path, executable=tmp_path / "azurite-blob")


@pytest.fixture
def container(azurite: Azurite) -> Iterator[ContainerClient]:
    """A new, empty container."""
    client = ContainerClient.from_connection_string(azurite.connection_string, f"capture-{uuid.uuid4().hex[:12]}")
    client.create_container()
    with client:
        yield client


def _upload(container: ContainerClient, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        container.upload_blob(name, data)


def _url(azurite: Azurite, container: ContainerClient, prefix: str = "") -> str:
    return f"{azurite.account_url}/{container.container_name}" + (f"/{prefix}" if prefix else "")


@pytest.fixture
def uploaded(container: ContainerClient) -> dict[str, list[Message]]:
    """Partitions 0, 1 and 10 in the default layout, a deflate file among them, and a stray blob."""
    files = dict(_windows("0", 2, 5)) | dict(_windows("1", 3, 4, seed=8)) | dict(_windows("10", 1, 3, seed=9))
    blobs = {
        name: _capture(messages, "deflate" if name.startswith("ns/hub/1/") else "null")
        for name, messages in files.items()
    }
    _upload(container, blobs | {"ns/hub/1/README.txt": b"not capture"})
    return files


@pytest.mark.integration
def test_a_container_is_listed_and_read(
    azurite: Azurite, container: ContainerClient, uploaded: dict[str, list[Message]]
) -> None:
    url = _url(azurite, container)

    with plan_sources([url], connection_string=azurite.connection_string) as plan:
        assert list(plan.partitions) == ["0", "1", "10"]
        assert [file.name for file in plan.partitions["1"]] == [f"{url}/{name}" for name in sorted(uploaded)[2:5]]
        assert plan.total_bytes == sum(blob.size for blob in container.list_blobs() if blob.name.endswith(".avro"))
        messages = _read_all(plan)

    for partition in ("0", "1", "10"):
        names = sorted(name for name in uploaded if name.startswith(f"ns/hub/{partition}/"))
        assert messages[partition] == [m for name in names for m in uploaded[name]]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("prefix", "partitions", "count"),
    [
        ("ns/hub/1", ["1"], 3),  # a folder: not ns/hub/10
        ("ns/hub/1/", ["1"], 3),
        ("ns/hub/10", ["10"], 1),
        ("ns/hub/0/2026/11/01/09/05/00.avro", ["0"], 1),  # one blob
        ("ns", ["0", "1", "10"], 6),
    ],
)
def test_a_prefix_selects_a_folder_or_a_blob(
    azurite: Azurite,
    container: ContainerClient,
    uploaded: dict[str, list[Message]],
    prefix: str,
    partitions: list[str],
    count: int,
) -> None:
    with plan_sources([_url(azurite, container, prefix)], connection_string=azurite.connection_string) as plan:
        assert list(plan.partitions) == partitions
        assert len(plan.files) == count


@pytest.mark.integration
def test_a_prefix_without_capture_files(azurite: Azurite, container: ContainerClient, uploaded: object) -> None:
    url = _url(azurite, container, "ns/hub/2")

    with pytest.raises(SourceError, match=rf"^{url}: no \.avro files found"):
        plan_sources([url], connection_string=azurite.connection_string)


@pytest.mark.integration
def test_a_sas_token_in_the_url(azurite: Azurite, container: ContainerClient, uploaded: object) -> None:
    sas = generate_container_sas(
        ACCOUNT,
        container.container_name,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )

    with plan_sources([f"{_url(azurite, container, 'ns/hub/10')}?{sas}"]) as plan:
        [file] = plan.files
        assert "sig=" not in file.name
        assert len(list(plan.messages(file))) == 3


@pytest.mark.integration
def test_a_missing_container(azurite: Azurite) -> None:
    url = f"{azurite.account_url}/no-such-container"

    with pytest.raises(SourceError, match=rf"^{url}: container 'no-such-container' does not exist"):
        plan_sources([url], connection_string=azurite.connection_string)


@pytest.mark.integration
def test_a_wrong_key(azurite: Azurite, container: ContainerClient) -> None:
    wrong = azurite.connection_string.replace(ACCOUNT_KEY, "d3Jvbmcga2V5" * 8)

    with pytest.raises(SourceError, match="access denied") as caught:
        plan_sources([_url(azurite, container)], connection_string=wrong)

    assert "d3Jvbmcga2V5" not in str(caught.value)


@pytest.mark.integration
def test_a_connection_string_of_another_account(azurite: Azurite, container: ContainerClient) -> None:
    other = azurite.connection_string.replace(f":{azurite.port}/", ":9/")

    with pytest.raises(SourceError, match="the connection string is for another account"):
        plan_sources([_url(azurite, container)], connection_string=other)


@pytest.mark.integration
def test_a_malformed_connection_string(azurite: Azurite, container: ContainerClient) -> None:
    with pytest.raises(SourceError, match="cannot connect with the credentials given"):
        plan_sources([_url(azurite, container)], connection_string="AccountKey=secret")


@pytest.mark.integration
def test_a_blob_deleted_since_planning(
    azurite: Azurite, container: ContainerClient, uploaded: dict[str, list[Message]]
) -> None:
    with plan_sources([_url(azurite, container, "ns/hub/10")], connection_string=azurite.connection_string) as plan:
        [file] = plan.files
        container.delete_blob(sorted(uploaded)[-1])
        with pytest.raises(SourceError, match=rf"^{file.name}: not found"):
            list(plan.messages(file))


def _peak_memory_reading(azurite: Azurite, container: ContainerClient, records: int) -> int:
    """The most memory reading a blob of ``records`` 100 kB records held at once, in bytes."""
    body = b"x" * 100_000
    stream = io.BytesIO()
    write_capture(stream, number_messages([body] * records, start=START))
    name = _layout(str(records), START)
    container.upload_blob(name, stream.getvalue())
    del stream
    url = _url(azurite, container, name)
    with plan_sources([url], connection_string=azurite.connection_string) as plan:
        [file] = plan.files
        assert file.size is not None
        assert file.size > records * len(body)
        tracemalloc.start()
        try:
            size = sum(len(message.body) for message in plan.messages(file))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert size == records * len(body)
    return peak


@pytest.mark.integration
def test_memory_does_not_grow_with_the_blob(azurite: Azurite, container: ContainerClient) -> None:
    small = _peak_memory_reading(azurite, container, 80)  # 8 MB
    large = _peak_memory_reading(azurite, container, 400)  # 40 MB

    assert large < small + 8_000_000  # the blobs differ by 32 MB
    assert large < 30_000_000
