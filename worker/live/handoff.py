"""The seam between receiving and processing: what crosses it, the interface across it, and its wire.

Receiving (:mod:`worker.live.receiver`, the SDK's side) hands each owned partition's events to a
:class:`PartitionHost` as :class:`Delivery` records. The host runs that partition's pipeline either
in this process (:class:`~worker.live.inprocess.InProcessHost`) or in a child process
(:class:`~worker.live.childprocess.ChildProcessHost`, whose child end is :mod:`worker.live.child`). Between
the two processes go :data:`Command` records one way and :data:`Reply` records the other; each end
dispatches them with ``match`` and ``assert_never``, so a record added to one union and not handled
at the other end is a type error. On the wire a record is a length-prefixed pickle of a plain
tuple, its kind's number and its fields (the two ends are the same program): a few times cheaper
than pickling the record itself, which matters for the one record sent per received batch.

Back-pressure across the seam has one owner, :class:`Inbox`: a partition may have ``limit`` events
handed over and not yet taken in by its pipeline, and ``put`` waits for room beyond that.
"""

from __future__ import annotations

import asyncio
import io
import pickle
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, NamedTuple, Protocol, cast, get_args

from worker.core.accounting import Tally
from worker.errors import ChildProcessFailed, PartitionFailed
from worker.events import NO_PROPERTIES, Message, Position
from worker.settings import ProcessingSettings

# --- what receiving hands over ---------------------------------------------------------------------


class Delivery(NamedTuple):
    """One received event as the receiver hands it over; the SDK's types stop before this."""

    body: bytes
    offset: str | None
    sequence_number: int | None
    #: Milliseconds since the epoch, as the hub's annotation carries it.
    enqueued_time: int | None
    #: Application properties as the AMQP message carries them (keys, and text values, may be bytes),
    #: or None when there are none: decoded only if the pipeline reads them (:class:`AmqpProperties`).
    properties: Mapping[str | bytes, object] | None

    def message(self, partition_id: str) -> Message:
        """The core's record of this event."""
        enqueued = self.enqueued_time
        when = None if enqueued is None else datetime.fromtimestamp(enqueued / 1000, UTC)
        position = Position(partition_id, self.offset, self.sequence_number, when)
        properties = self.properties
        return Message(self.body, position, AmqpProperties(properties) if properties else NO_PROPERTIES)


class AmqpProperties(Mapping[str, object]):
    """A message's application properties, decoded (keys to text, bytes values to text) when first
    read. The pipeline reads them only for a dead letter or a Capture record, so the receiver
    hands them over as they came and most events never decode them."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: Mapping[str | bytes, object]) -> None:
        self._raw = raw
        self._decoded: dict[str, object] | None = None

    def _items(self) -> dict[str, object]:
        decoded = self._decoded
        if decoded is None:
            decoded = self._decoded = {str(_text(k)): _text(v) for k, v in self._raw.items()}
        return decoded

    def __getitem__(self, key: str) -> object:
        return self._items()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(self._items())


def _text(value: object) -> object:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """What one open partition reports: to the metrics, and to tell when the worker is idle."""

    partition_id: str
    buffered: int
    open_messages: int
    checkpoint_age: float
    checkpoint_writes: int
    checkpoint_failures: int
    #: The checkpoint position has moved past the one last written.
    pending_checkpoint: bool
    #: Messages the pipeline has taken in since the partition was opened.
    taken: int
    #: The pipeline has stopped on a fatal error.
    failed: bool = False


@dataclass(frozen=True, slots=True)
class ActionCounts:
    """Action attempts counted by :class:`~worker.live.metrics.ActionMetrics`, as plain data."""

    #: Attempts by (action type, result).
    attempts: dict[tuple[str, str], int]
    #: By action type: the count in each latency bucket (not cumulative), then above the last, then
    #: the sum of seconds.
    latency: dict[str, list[float]]
    #: Dead letters that could not be written (and were tried again), by action type.
    dead_letter_failures: dict[str, int]
    #: Attempts under way, by action type: how many, and when the oldest started (``time.monotonic()``,
    #: the same clock in both processes).
    running: dict[str, tuple[int, float]] = field(default_factory=dict)


class Inbox:
    """Back-pressure for one partition: events handed over, and taken in by its pipeline.

    The receiving side calls :meth:`hand` and awaits :meth:`room`; the processing side calls
    :meth:`take` as its pipeline takes events in, and :meth:`fail` when the pipeline stops.
    ``on_take`` is told (partition, count) at each :meth:`take`: the child process reports it.
    """

    __slots__ = ("_on_take", "_room", "failed", "handed", "limit", "partition_id", "taken")

    def __init__(self, partition_id: str, limit: int, on_take: Callable[[str, int], None] | None = None) -> None:
        self.partition_id = partition_id
        self.limit = max(limit, 1)
        self.handed = 0
        self.taken = 0
        self.failed = False
        self._on_take = on_take
        self._room = asyncio.Event()

    def hand(self, count: int) -> None:
        self.handed += count

    def take(self, count: int) -> None:
        self.taken += count
        self._room.set()
        if self._on_take is not None:
            self._on_take(self.partition_id, count)

    def fail(self) -> None:
        self.failed = True
        self._room.set()

    async def room(self) -> None:
        """Wait while ``limit`` events are handed over and not taken. Raises PartitionFailed once the
        pipeline has stopped."""
        while self.handed - self.taken >= self.limit and not self.failed:
            self._room.clear()
            await self._room.wait()
        if self.failed:
            raise PartitionFailed(f"partition {self.partition_id}: its pipeline has stopped")


class PartitionHost(Protocol):
    """Where the pipelines of the owned partitions run: the one interface the receiver drives."""

    async def open(self, partition_id: str) -> None:
        """Start the partition's pipeline from its saved state."""

    async def put(self, partition_id: str, deliveries: list[Delivery]) -> None:
        """Hand in a batch (empty: nothing arrived in time); waits while the partition's inbox is
        full. Raises PartitionFailed when its pipeline has stopped."""

    async def close(self, partition_id: str, grace: float, *, write: bool) -> None:
        """Stop the partition: in-flight actions get ``grace`` seconds; ``write``: the final checkpoint."""

    def reload(self) -> None:
        """Load the rules again; an invalid table is logged and the old one kept."""

    def tally(self) -> Tally:
        """The counts of every partition, open now or before."""

    def statuses(self) -> list[PartitionStatus]:
        """The open partitions'."""

    async def failure(self) -> None:
        """Return (raising what went wrong) only if the host can no longer run pipelines."""


# --- between the two processes ---------------------------------------------------------------------
# The records are named tuples: frozen, typed, and cheap to build and to put on the wire.


class Start(NamedTuple):
    """The first frame to the child: what it processes, and where it checkpoints."""

    settings: ProcessingSettings


class Open(NamedTuple):
    partition_id: str


class Put(NamedTuple):
    partition_id: str
    deliveries: list[Delivery]


class Close(NamedTuple):
    partition_id: str
    grace: float
    write: bool


class Reload(NamedTuple):
    """Load the rules again."""


class Stop(NamedTuple):
    """Close what is still open without a checkpoint, and exit."""


#: What the parent tells the child, after :class:`Start`.
Command = Open | Put | Close | Reload | Stop


class Ready(NamedTuple):
    """The child's stores are open and its rules loaded."""


class Taken(NamedTuple):
    """A partition's pipeline took in ``number`` more of the events handed to it."""

    partition_id: str
    number: int


class Report(NamedTuple):
    """The child's partitions and counts, every quarter second and whenever a partition closes."""

    statuses: tuple[PartitionStatus, ...]
    tally: Tally
    actions: ActionCounts


class Closed(NamedTuple):
    partition_id: str


class Fatal(NamedTuple):
    """The child cannot go on (its stores cannot be opened, say); it exits after this."""

    error: str


#: What the child tells the parent.
Reply = Ready | Taken | Report | Closed | Fatal

_HEAD = struct.Struct("<I")
_COMMANDS: Final = get_args(Command)
_REPLIES: Final = get_args(Reply)
#: Each record's number on the wire.
_KINDS: Final[tuple[type[Start | Command | Reply], ...]] = (Start, *_COMMANDS, *_REPLIES)
_CODES: Final = {kind: code for code, kind in enumerate(_KINDS)}
_PUT: Final = _CODES[Put]


def frame(message: Start | Command | Reply) -> bytes:
    """``message`` as one frame: its length, then the pickle of a plain tuple of its kind's number and
    its fields, deliveries as plain tuples (a pickled record costs Python calls of its own, per record)."""
    code = _CODES[type(message)]
    if isinstance(message, Put):
        row: tuple[object, ...] = (code, message.partition_id, [tuple(delivery) for delivery in message.deliveries])
    else:
        row = (code, *message)
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    # No memo: a frame is a tree of plain values, with nothing shared or recursive, so the memo would
    # only cost (most of the time of pickling a batch whose events carry application properties).
    # The docs have called ``fast`` deprecated since Python 2, with no warning and no removal planned;
    # the tests of every record on the wire would show it gone.
    pickler.fast = True
    pickler.dump(row)
    data = buffer.getvalue()
    return _HEAD.pack(len(data)) + data


async def read_start(reader: asyncio.StreamReader) -> Start:
    return cast(Start, await _read(reader, (Start,)))


async def read_command(reader: asyncio.StreamReader) -> Command:
    return cast(Command, await _read(reader, _COMMANDS))


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    return cast(Reply, await _read(reader, _REPLIES))


async def _read(reader: asyncio.StreamReader, kinds: tuple[type, ...]) -> object:
    """The next frame's record, one of ``kinds``. Raises IncompleteReadError at the end of the stream,
    ChildProcessFailed for anything else than expected."""
    (size,) = _HEAD.unpack(await reader.readexactly(_HEAD.size))
    data = await reader.readexactly(size)
    try:
        code, *fields = pickle.loads(data)  # noqa: S301 - our own program at the other end of a private socket pair
        kind = _KINDS[code]
        if code == _PUT:
            fields[1] = [Delivery._make(delivery) for delivery in fields[1]]
        message = kind(*fields)
    except Exception as exc:
        raise ChildProcessFailed(f"a frame between the worker's processes cannot be read: {exc!r}") from exc
    if kind not in kinds:
        expected = ", ".join(kind.__name__ for kind in kinds)
        raise ChildProcessFailed(f"expected one of {expected} between the worker's processes, got {message!r:.80}")
    return message
