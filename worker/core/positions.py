"""The checkpoint position of one partition: the highest position with nothing unfinished at or below.

Messages are opened in the order they are read, each with the number of events its body held, and
each event is finished once (acted on, dead-lettered, filtered, skipped or invalid). The checkpoint
may move past a message only when every event of it and of every message before it is finished.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from worker.events import Position


class Ticket:
    """One open message: its position, its events still unfinished, the ids of those finished."""

    __slots__ = ("finished_ids", "position", "remaining")

    def __init__(self, position: Position, events: int) -> None:
        self.position = position
        self.remaining = events
        self.finished_ids: list[str] = []


class PositionTracker:
    """Open messages in read order, and the checkpoint position they allow."""

    __slots__ = ("_open", "checkpoint")

    def __init__(self, checkpoint: Position | None = None) -> None:
        #: The position of the last message whose events, and all before them, are finished.
        self.checkpoint = checkpoint
        self._open: deque[Ticket] = deque()

    def __len__(self) -> int:
        """Messages read and not yet behind the checkpoint."""
        return len(self._open)

    def open(self, position: Position, events: int) -> Ticket:
        ticket = Ticket(position, events)
        self._open.append(ticket)
        if events == 0:
            self._advance()
        return ticket

    def finish(self, ticket: Ticket, event_id: str | None = None) -> None:
        """One event of ``ticket``'s message is finished; ``event_id`` when it had a valid one."""
        if ticket.remaining <= 0:
            raise ValueError(f"every event of the message at {ticket.position} is already finished")
        ticket.remaining -= 1
        if event_id is not None:
            ticket.finished_ids.append(event_id)
        if ticket.remaining == 0 and self._open and self._open[0] is ticket:
            self._advance()

    def finished_beyond(self) -> Iterator[str]:
        """Ids of events finished in messages still ahead of the checkpoint."""
        for ticket in self._open:
            yield from ticket.finished_ids

    def _advance(self) -> None:
        queue = self._open
        while queue and queue[0].remaining == 0:
            self.checkpoint = queue.popleft().position
