"""Where Capture files come from for a replay: local files and directories, and blob containers.

A source is one of:

- a local file (read whatever its name), or a directory searched recursively for ``*.avro``;
- a blob container URL with an optional prefix, host style
  ``https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]``, or path style as emulators serve
  it, ``http://127.0.0.1:10000/ACCOUNT/CONTAINER[/PREFIX]`` (path style when the host is an IP
  address, ``localhost`` or a name without dots). A prefix selects a folder (``ns/hub/1`` does not
  take ``ns/hub/10``) or one blob.

Blob credentials: a SAS token in the URL's query, else the connection string given (whose account
must be the URL's), else azure-identity's ``DefaultAzureCredential`` (HTTPS only).

:func:`plan_sources` lists every file of every source and makes a :class:`Plan`: files grouped by
partition, each partition's files in time order. Dead-letter lanes are sources of the same kinds,
holding ``*.json`` letters: :func:`list_dead_letters` lists them, :func:`read_dead_letter` reads one,
and :func:`plan_dead_letters` plans their re-drive.

- **Partitions.** A file in Capture's default layout
  (``.../{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro``) belongs to its
  PartitionId. A file outside the layout is a partition of its own, whose id is the file's name: a
  Capture file always holds one partition, and files from different partitions merged into one would
  repeat sequence numbers and mix their orders.
- **Order.** A partition's files are ordered by the time in their path, then by name: the layout
  sorts by time, and a partition that several sources share (say two copies of a hub) still reads
  in time order.
- **Time range.** ``since <= enqueued time < until``. Records are filtered when read
  (:func:`iter_messages`); files are left out of the plan by the time in their path only when they
  cannot hold a record in range. Capture names a file by the start of its window and writes it when
  the window closes, at most 15 minutes later, so its records were enqueued in
  ``[window start, window start + 15 min)``; the plan widens that by :data:`SKIP_MARGIN` on each
  side for clock skew. Files outside the layout are never left out.

Reading streams blobs in chunks of at most :data:`CHUNK_SIZE`: memory does not grow with file sizes.
Failures become :class:`~worker.errors.SourceError` naming the source, and unreadable file contents
:class:`~worker.errors.CaptureError` naming the file.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Final, Protocol, Self

import orjson
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import ContainerClient, StorageStreamDownloader

from worker.actions.delivery.deadletters import Letter, Redrive, message_of
from worker.blob_urls import ContainerUrl, check_account, parse_container_url
from worker.errors import SourceError
from worker.events import Message
from worker.replay.capture import partition_from_path, read_capture, window_from_path

#: Capture's longest time window: a file holds records enqueued within this much of its path's time.
MAX_WINDOW: Final = timedelta(minutes=15)
#: Allowance for clock skew when leaving files out of a time range by the time in their path.
SKIP_MARGIN: Final = timedelta(minutes=5)
#: Blob downloads go in requests of at most this many bytes, which bounds the memory a read holds.
#: (The SDK briefly needs about nine times this per request, to gather a response.)
CHUNK_SIZE: Final = 2 * 1024 * 1024

_READ_BUFFER: Final = 1024 * 1024


class _Closeable(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CaptureFile:
    """One Capture file of a plan. ``name`` (a path or blob URL) names it in messages and errors."""

    name: str
    partition_id: str
    #: Bytes, for progress; None when unknown.
    size: int | None
    #: The time in the file's path (the start of its capture window), None outside the layout.
    window_start: datetime | None
    opener: Callable[[], BinaryIO] = field(repr=False, compare=False)
    #: Reads the messages itself, for sources that are not Capture files (dead letters).
    reader: Callable[[], Iterator[Message]] | None = field(default=None, repr=False, compare=False)

    def open(self) -> BinaryIO:
        """A binary stream of the file's bytes; the caller closes it."""
        return self.opener()


class _Holding:
    """What holds open clients (``resources``): close it, or use ``with``."""

    __slots__ = ()
    resources: tuple[_Closeable, ...]

    def close(self) -> None:
        for resource in self.resources:
            resource.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Plan(_Holding):
    """The files to replay, per partition, in reading order; close it (or use ``with``) when done."""

    partitions: Mapping[str, tuple[CaptureFile, ...]]
    since: datetime | None = None
    until: datetime | None = None
    #: Files left out because the time in their path is outside ``[since, until)``.
    skipped: int = 0
    resources: tuple[_Closeable, ...] = field(default=(), repr=False, compare=False)
    #: For a plan of dead letters: the actions to run again, filled in as the letters are read.
    redrive: Redrive | None = field(default=None, repr=False, compare=False)

    @property
    def files(self) -> tuple[CaptureFile, ...]:
        return tuple(file for files in self.partitions.values() for file in files)

    @property
    def total_bytes(self) -> int:
        """The size of every file planned (files of unknown size count 0)."""
        return sum(file.size or 0 for files in self.partitions.values() for file in files)

    def messages(self, file: CaptureFile) -> Iterator[Message]:
        """The messages of ``file`` inside the plan's time range."""
        if file.reader is not None:
            return file.reader()
        return iter_messages(file, since=self.since, until=self.until)


def plan_sources(
    sources: Sequence[str],
    *,
    connection_string: str | None = None,
    partitions: AbstractSet[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Plan:
    """List every Capture file of ``sources`` and plan their reading (see the module's docstring).

    ``partitions`` keeps only those partition ids; ``since`` and ``until`` (aware datetimes) bound
    the enqueued times. A file named by two sources is planned once. Raises
    :class:`~worker.errors.SourceError` when a source does not exist, a URL is malformed, a
    container is missing or cannot be listed with the credentials, or a source holds no ``.avro``.
    """
    for bound in (since, until):
        if bound is not None and bound.tzinfo is None:
            raise ValueError(f"the time range bound {bound.isoformat()} has no time zone")
    found: dict[str, CaptureFile] = {}
    resources: list[_Closeable] = []
    try:
        for source in sources:
            for file in _list_source(source, connection_string, resources):
                found.setdefault(file.name, file)
    except BaseException:
        for resource in resources:
            resource.close()
        raise
    grouped: dict[str, list[CaptureFile]] = {}
    skipped = 0
    for file in found.values():
        if partitions is not None and file.partition_id not in partitions:
            continue
        if not _may_hold(file.window_start, since, until):
            skipped += 1
            continue
        grouped.setdefault(file.partition_id, []).append(file)
    ordered = {
        partition: tuple(sorted(grouped[partition], key=_file_order))
        for partition in sorted(grouped, key=_partition_order)
    }
    return Plan(ordered, since, until, skipped, tuple(resources))


@dataclass(frozen=True, slots=True)
class LetterFiles(_Holding):
    """The dead-letter files of lanes, in name order; close it (or use ``with``) when done."""

    files: tuple[CaptureFile, ...]
    resources: tuple[_Closeable, ...] = field(default=(), repr=False, compare=False)

    def named(self, wanted: str) -> tuple[CaptureFile, ...]:
        """The letters ``wanted`` names: an id (:func:`letter_id`, with or without ``.json``), or an
        idempotency key (the end of a letter's name). One, unless folders of a lane repeat a name."""
        names = {wanted, f"{wanted}.json"}
        return tuple(
            file for file in self.files if letter_id(file) in names or letter_id(file).endswith(f"_{wanted}.json")
        )


def list_dead_letters(
    sources: Sequence[str], *, connection_string: str | None = None, allow_empty: bool = False
) -> LetterFiles:
    """Every dead letter (``*.json``) of the lanes ``sources``: directories, searched recursively, or
    blob container URLs with an optional prefix (credentials as for Capture), in name order.

    Raises :class:`~worker.errors.SourceError` as :func:`plan_sources` does; also for a lane that
    holds no letter, unless ``allow_empty``. Nothing is read: see :func:`read_dead_letter`.
    """
    found: dict[str, CaptureFile] = {}
    resources: list[_Closeable] = []
    try:
        for source in sources:
            for file in _list_source(source, connection_string, resources, ".json", required=not allow_empty):
                found.setdefault(file.name, file)
    except BaseException:
        for resource in resources:
            resource.close()
        raise
    return LetterFiles(tuple(sorted(found.values(), key=lambda file: (letter_id(file), file.name))), tuple(resources))


def letter_id(file: CaptureFile) -> str:
    """What names a dead letter in its lane: its file or blob name, without the folders."""
    return file.name.rpartition("/")[2]


def read_dead_letter(file: CaptureFile) -> tuple[object, Letter]:
    """A dead letter's JSON document, and what it holds. Raises SourceError naming the file."""
    try:
        with file.open() as stream:
            raw = stream.read()
    except OSError as exc:
        raise SourceError(f"{file.name}: cannot read: {exc.strerror or exc}") from exc
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"{file.name}: not a dead letter (not JSON: {exc})") from exc
    try:
        return document, message_of(document, file.name)
    except ValueError as exc:
        raise SourceError(str(exc)) from exc


def plan_dead_letters(
    sources: Sequence[str],
    *,
    connection_string: str | None = None,
    partitions: AbstractSet[str] | None = None,
) -> Plan:
    """Plan the re-drive of dead-letter lanes (directories or blob container URLs, as for Capture).

    Letters are grouped by the message they hold (one message per partition and sequence number,
    whichever of its events and actions failed) and ordered as in the hub, by their names; the
    plan's :attr:`Plan.redrive` learns, as each is read, which actions to run again.
    """
    listed = list_dead_letters(sources, connection_string=connection_string)
    messages: dict[tuple[str, str], list[CaptureFile]] = {}
    for file in listed.files:
        match = _LETTER.fullmatch(letter_id(file))
        partition, sequence = (match["partition"], match["sequence"]) if match else (file.name, "")
        if partitions is None or partition in partitions:
            messages.setdefault((partition, sequence), []).append(file)
    redrive = Redrive()
    grouped: dict[str, list[CaptureFile]] = {}
    for (partition, _), letters in messages.items():
        size = sum(letter.size or 0 for letter in letters)
        reader = functools.partial(_read_letters, tuple(letters), redrive)
        first = letters[0]
        grouped.setdefault(partition, []).append(CaptureFile(first.name, partition, size, None, first.opener, reader))
    ordered = {partition: tuple(grouped[partition]) for partition in sorted(grouped, key=_partition_order)}
    return Plan(ordered, resources=listed.resources, redrive=redrive)


#: A dead letter's name (see :mod:`worker.actions.delivery.deadletters`).
_LETTER: Final = re.compile(r"(?P<partition>[^_/]+)_(?P<sequence>\d{20}|unknown)_\d+_[0-9a-f]+\.json")


def plan_replay(
    sources: Sequence[str],
    *,
    dead_letters: bool,
    connection_string: str | None = None,
    partitions: AbstractSet[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Plan:
    """A replay's plan: of Capture files (:func:`plan_sources`), or with ``dead_letters`` of a re-drive
    (:func:`plan_dead_letters`, which ``since`` and ``until`` do not bound)."""
    if dead_letters:
        return plan_dead_letters(sources, connection_string=connection_string, partitions=partitions)
    return plan_sources(sources, connection_string=connection_string, partitions=partitions, since=since, until=until)


def _read_letters(letters: tuple[CaptureFile, ...], redrive: Redrive) -> Iterator[Message]:
    """The one message that the letters of a group hold; records their actions in ``redrive``."""
    message = None
    for letter in letters:
        _, found = read_dead_letter(letter)
        redrive.add(found.event_id, found.rule, found.action_index)
        message = message or found.message
    if message is not None:
        yield message


def iter_messages(
    file: CaptureFile, *, since: datetime | None = None, until: datetime | None = None
) -> Iterator[Message]:
    """The messages of ``file`` whose enqueued time is in ``[since, until)``, streamed."""
    try:
        stream = file.open()
    except OSError as exc:
        raise SourceError(f"{file.name}: cannot open: {exc.strerror or exc}") from exc
    with stream:
        messages = read_capture(stream, partition_id=file.partition_id, name=file.name)
        if since is None and until is None:
            yield from messages
            return
        for message in messages:
            moment = message.position.enqueued_time
            if moment is None or ((since is None or moment >= since) and (until is None or moment < until)):
                yield message


def _may_hold(window_start: datetime | None, since: datetime | None, until: datetime | None) -> bool:
    if window_start is None:
        return True
    if until is not None and window_start - SKIP_MARGIN >= until:
        return False
    return since is None or window_start + MAX_WINDOW + SKIP_MARGIN > since


def _file_order(file: CaptureFile) -> tuple[str, str]:
    return (file.window_start.isoformat() if file.window_start else "", file.name)


def _partition_order(partition_id: str) -> tuple[int, int, str]:
    # Numeric ids in numeric order ("2" before "10"), then the others by name.
    if partition_id.isascii() and partition_id.isdigit():
        return (0, int(partition_id), "")
    return (1, 0, partition_id)


def _list_source(
    source: str,
    connection_string: str | None,
    resources: list[_Closeable],
    suffix: str = ".avro",
    *,
    required: bool = True,
) -> list[CaptureFile]:
    if "://" in source:
        files = _list_container(parse_container_url(source), connection_string, resources, suffix)
    else:
        files = _list_local(source, suffix)
    if not files and required:
        raise SourceError(f"{source}: no {suffix} files found")
    return files


# -- local files --------------------------------------------------------------------------------


def _list_local(source: str, suffix: str = ".avro") -> list[CaptureFile]:
    root = Path(source)
    if root.is_dir():
        try:
            paths = [path for path in root.rglob(f"*{suffix}") if path.is_file()]
        except OSError as exc:
            raise SourceError(f"{source}: cannot list the directory: {exc.strerror or exc}") from exc
    elif root.exists():
        paths = [root]
    else:
        raise SourceError(f"{source}: no such file or directory")
    return [_local_file(path) for path in paths]


def _local_file(path: Path) -> CaptureFile:
    name = str(path)
    try:
        size: int | None = path.stat().st_size
    except OSError:
        size = None
    window = window_from_path(name)
    partition = partition_from_path(name) if window else None
    return CaptureFile(name, partition or name, size, window, lambda: open(path, "rb"))


# -- blob containers ----------------------------------------------------------------------------


def _container_client(
    location: ContainerUrl, connection_string: str | None, resources: list[_Closeable]
) -> ContainerClient:
    settings: dict[str, Any] = {"max_single_get_size": CHUNK_SIZE, "max_chunk_get_size": CHUNK_SIZE}
    where = location.container_url
    try:
        if location.sas_token:
            client = ContainerClient(
                location.account_url, location.container, credential=location.sas_token, **settings
            )
        elif connection_string:
            client = ContainerClient.from_connection_string(connection_string, location.container, **settings)
            try:
                check_account(location, client.url)
            except SourceError:
                client.close()
                raise
        else:
            if location.account_url.startswith("http://"):
                raise SourceError(
                    f"{where}: an http:// URL needs a connection string or a SAS token in the URL "
                    "(Azure AD credentials are sent over HTTPS only)"
                )
            from azure.identity import DefaultAzureCredential  # noqa: PLC0415 - heavy, and only for Azure AD

            credential = DefaultAzureCredential()
            resources.append(credential)
            client = ContainerClient(location.account_url, location.container, credential=credential, **settings)
    except ValueError as exc:  # a malformed connection string; its text holds secrets, so it is not shown
        raise SourceError(f"{where}: cannot connect with the credentials given: {exc}") from exc
    resources.append(client)
    return client


def _list_container(
    location: ContainerUrl, connection_string: str | None, resources: list[_Closeable], suffix: str = ".avro"
) -> list[CaptureFile]:
    client = _container_client(location, connection_string, resources)
    where = location.container_url + (f"/{location.prefix}" if location.prefix else "")
    prefix = location.prefix
    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    files = []
    try:
        for blob in client.list_blobs(name_starts_with=prefix or None):
            name: str = blob.name
            if not name.endswith(suffix) or not (name == prefix or name.startswith(folder)):
                continue
            files.append(_blob_file(client, location, name, blob.size))
    except AzureError as exc:
        raise _source_error(where, location, exc) from exc
    return files


def _blob_file(client: ContainerClient, location: ContainerUrl, name: str, size: int | None) -> CaptureFile:
    display = f"{location.container_url}/{name}"
    window = window_from_path(name)
    partition = partition_from_path(name) if window else None

    def opener() -> BinaryIO:
        try:
            downloader = client.download_blob(name, max_concurrency=1)
        except AzureError as exc:
            raise _source_error(display, location, exc) from exc
        return io.BufferedReader(_BlobStream(downloader, display, location), _READ_BUFFER)

    return CaptureFile(display, partition or display, size, window, opener)


class _BlobStream(io.RawIOBase):
    """A blob download as a raw stream, fetched a chunk at a time, its failures as SourceError."""

    def __init__(self, downloader: StorageStreamDownloader[bytes], name: str, location: ContainerUrl) -> None:
        super().__init__()
        self._downloader = downloader
        self._name = name
        self._location = location

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._downloader.read(len(view))
        except AzureError as exc:
            raise _source_error(self._name, self._location, exc) from exc
        view[: len(data)] = data
        return len(data)


def _source_error(where: str, location: ContainerUrl, exc: AzureError) -> SourceError:
    account = location.account_url
    if isinstance(exc, ResourceNotFoundError):
        if getattr(exc, "error_code", None) == "ContainerNotFound":
            return SourceError(f"{where}: container {location.container!r} does not exist in {account}")
        return SourceError(f"{where}: not found (it may have been deleted since it was listed)")
    if isinstance(exc, ClientAuthenticationError) or (isinstance(exc, HttpResponseError) and exc.status_code == 403):
        return SourceError(
            f"{where}: access denied ({_reason(exc)}); check the connection string or SAS token, or that the "
            "signed-in identity may read blobs (role Storage Blob Data Reader)"
        )
    if isinstance(exc, ServiceRequestError):
        return SourceError(f"{where}: cannot reach {account} ({_reason(exc)})")
    return SourceError(f"{where}: {_reason(exc)}")


def _reason(exc: AzureError) -> str:
    code = getattr(exc, "error_code", None)
    text = str(exc.message or exc).split("\n", 1)[0][:200] or type(exc).__name__
    return f"{code}: {text}" if code and code not in text else text
