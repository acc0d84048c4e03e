"""The core of one partition, without I/O: decode, guard, dedupe, reorder, evaluate, account.

A :class:`PartitionCore` is fed the partition's messages in read order and hands back
:class:`Work`: matched events with their planned actions, released in per-subject order. The
caller runs the actions (one subject's in order) and reports each work item finished; everything
else (invalid, skipped, unmatched) is finished inside. The core tracks the checkpoint position and
the :class:`~worker.core.state.SavedState` to persist beside it, so that after a restart from that
checkpoint nothing finished is done again and nothing unfinished is lost.

Rules that remember (``expect``, ``group``) keep what they wait for in the partition's
:class:`~worker.core.remember.Memory`: an event that starts an expectation or joins a group is finished
at once (the memory is saved with the checkpoint), and what falls due is released as work of its
own, with its memo (:meth:`PartitionCore.fire_due`, and before each event in a replay).

The live worker and the replay share this class through its async driver
(:mod:`worker.driver`); they differ only in where messages come from and in who passes
the time (:meth:`PartitionCore.release_idle`, :meth:`PartitionCore.fire_due`). Like h11's
connection, it never reads a clock, never logs and never awaits: time comes in as an argument, and
what happened goes out as values.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import NamedTuple, TypeVar

from worker.actions.base import ActionFate, PlannedAction
from worker.core.accounting import Fate, Skip, Tally
from worker.core.bounded import RecentMap, RecentSet
from worker.core.decoding import decode
from worker.core.memos import Memo
from worker.core.ordering import ReorderBuffer, SequencerKey, Sequencers
from worker.core.positions import PositionTracker, Ticket
from worker.core.remember import Memory, event_time
from worker.core.rules import Outcome, Rule, RulesTable
from worker.core.state import SavedState
from worker.events import Event, InvalidEvent, Message, Position
from worker.settings import CoreSettings, LatePolicy


class Work(NamedTuple):
    """A matched event released from the buffer, with the actions its rules ask for."""

    event: Event
    #: The matched rules that have actions, in table order.
    rules: tuple[Rule, ...]
    subject: str
    key: SequencerKey
    late: bool
    #: The event's place among the partition's messages (None: the work of a memo).
    ticket: Ticket | None
    #: The subject's last released key before this event's release: what to persist for the subject
    #: while this work is unfinished, so that a restart does not take it for a late event.
    prior: SequencerKey | None = None
    #: An expiry or a group notification (``event`` is its event), for a rule that remembers.
    memo: Memo | None = None

    @property
    def actions(self) -> tuple[PlannedAction, ...]:
        """The actions to run, in rule order then action order (built on demand: a dry run only counts)."""
        event, late, memo = self.event, self.late, self.memo
        return tuple(PlannedAction(rule.name, spec, event, late, memo) for rule in self.rules for spec in rule.actions)


#: The sequencer key of a memo's work (its own lane: it is not ordered among its subject's events).
_MEMO_KEY: SequencerKey = (0, 0, 0, 0)


_Held = tuple[Event, Ticket, SequencerKey]
_T = TypeVar("_T")


def _newest(items: list[_T], limit: int | None) -> list[_T]:
    """The last ``limit`` of ``items`` (oldest first), all when ``limit`` is None."""
    return items if limit is None or len(items) <= limit else items[len(items) - limit :]


class PartitionCore:
    """One partition's state machine. Not thread-safe; one task drives it."""

    def __init__(
        self,
        partition_id: str,
        table: RulesTable,
        settings: CoreSettings | None = None,
        *,
        state: SavedState | None = None,
        checkpoint: Position | None = None,
        planning: bool = False,
    ) -> None:
        """``planning``: a dry run that only counts. An event's actions are counted as planned and the
        event finished here, at once: no :class:`Work` is released for it (the work of rules that
        remember still is)."""
        settings = settings or CoreSettings()
        state = state or SavedState()
        self.partition_id = partition_id
        #: The rules table in force; replace it to reload rules (applies to events not yet released).
        self.table = table
        self.settings = settings
        self.tally = Tally()
        self._sequencers = Sequencers(dict(settings.sequencers))
        self._buffer: ReorderBuffer[_Held] = ReorderBuffer(settings.window, settings.max_buffered)
        self._tracker = PositionTracker(checkpoint)
        self._seen = RecentSet[str](settings.max_ids, (*state.recent_ids, *state.finished_beyond))
        self._released_last = RecentMap[str, SequencerKey](settings.max_subjects, state.last_keys)
        #: Per subject, its released work not yet finished, in release (and finishing) order.
        self._unfinished: dict[str, deque[Work]] = {}
        self._last_arrival: float | None = None
        self._memory = Memory(self.tally, partition_id, settings.max_pending, settings.max_group_events)
        self._memory.restore(state.pending, table)
        #: The largest event time released (a replay's clock for the memory).
        self._watermark = float("-inf")
        self._planning = planning

    # --- reading ------------------------------------------------------------------------------

    def receive(self, message: Message, now: float | None = None, *, wall: float | None = None) -> list[Work]:
        """Take the partition's next message; return the work its arrival released.

        ``now``: the caller's clock, for the window. ``wall``: the time of processing (POSIX seconds),
        which an event's age runs to; None: its enqueued time (what a worker keeping up would see).
        """
        if now is not None:
            self._last_arrival = now
        decoded = decode(message)
        self.tally.read += len(decoded)
        ticket = self._tracker.open(message.position, len(decoded))
        position = message.position
        enqueued = None if position.enqueued_time is None else position.enqueued_time.timestamp()
        table, tally, partition = self.table, self.tally, self.partition_id
        sequencer_key = self._sequencers.key
        released: list[_Held] = []
        for item in decoded:
            if isinstance(item, InvalidEvent):
                tally.count_invalid(partition, item.error.reason)
                self._tracker.finish(ticket)
                continue
            skip = None
            if not table.admits_topic(item.topic):
                tally.count_foreign(partition, item.type, item.topic)
                self._tracker.finish(ticket)
                continue
            if not table.handles(item.type):
                skip = Skip.UNHANDLED_TYPE
            elif item.id in self._seen:
                skip = Skip.DUPLICATE
            if skip is not None:
                tally.count_skip(partition, item.type, skip)
                self._tracker.finish(ticket)
                continue
            self._seen.add(item.id)
            key = sequencer_key(item)
            released += self._buffer.push((item, ticket, key), item.subject or "", key, enqueued)
        return self._evaluate(released, wall) if released else []

    def release_idle(self, now: float, *, wall: float | None = None) -> list[Work]:
        """Release everything held if nothing arrived for the window (``now`` on the caller's clock)."""
        last = self._last_arrival
        if not self._buffer or last is None or now - last < self.settings.window:
            return []
        return self._evaluate(self._buffer.release_all(), wall)

    @property
    def idle_release_at(self) -> float | None:
        """When :meth:`release_idle` releases the buffer if nothing arrives before (the caller's clock)."""
        last = self._last_arrival
        if not self._buffer or last is None:
            return None
        return last + self.settings.window

    def release_all(self, *, wall: float | None = None) -> list[Work]:
        """Release everything held: the source has ended."""
        return self._evaluate(self._buffer.release_all(), wall)

    def fire_due(self, wall: float | None = None) -> list[Work]:
        """The work of the expectations and groups that are due: by the wall clock (``wall``, POSIX
        seconds) less the window in the live worker; by the watermark in a replay."""
        memory = self._memory
        if not memory.busy:
            return []
        return self._fire(self._clock(wall))

    def advance(self, moment: float) -> list[Work]:
        """Move a replay's clock (the watermark) on to ``moment`` (POSIX seconds) without an event, and
        return the work of what fell due: a rules test's time advance."""
        self._watermark = max(self._watermark, moment)
        return self._fire(self._watermark) if self._memory.busy else []

    @property
    def memory_due(self) -> float | None:
        """When :meth:`fire_due` next has work (POSIX seconds; the live worker's clock), if ever."""
        due = self._memory.next_due
        if due is None or self.settings.clock != "wall":
            return None
        return due + self.settings.window

    @property
    def memory_settled(self) -> int:
        """Moves whenever a fired expiry or notification finishes: the state to save differs."""
        return self._memory.settled

    def _clock(self, wall: float | None) -> float:
        if self.settings.clock == "wall" and wall is not None:
            return wall - self.settings.window
        return self._watermark

    def _fire(self, at: float) -> list[Work]:
        out: list[Work] = []
        for rule, memo in self._memory.due(at, self.table):
            subject = f"\x00{memo.kind}\x00{rule.name}\x00{memo.key}"
            out.append(self._hold(Work(memo.event, (rule,), subject, _MEMO_KEY, memo.late, None, None, memo)))
        return out

    def _hold(self, work: Work) -> Work:
        """Note released work as unfinished, after its subject's earlier work."""
        pending = self._unfinished.get(work.subject)
        if pending is None:
            self._unfinished[work.subject] = deque((work,))
        else:
            pending.append(work)
        return work

    def hand_over(self) -> int:
        """The partition is closed here: count what the buffer still holds as handed over, and return
        how many. They stay unfinished (no checkpoint passes them) and are forgotten as seen, so that
        whoever reads them next, from the checkpoint, acts on them."""
        held = self._buffer.release_all()
        tally, partition = self.tally, self.partition_id
        for event, _, _ in held:
            tally.count(partition, event.type, Fate.HANDED_OVER)
            self._seen.discard(event.id)
        return len(held)

    def _evaluate(self, released: Iterable[_Held], wall: float | None) -> list[Work]:
        out: list[Work] = []
        table, tally, partition = self.table, self.tally, self.partition_id
        late_policy = self.settings.late
        default_age = self.settings.max_age
        aging = default_age is not None or table.ages
        memory = self._memory
        remembering = table.remembers or memory.busy
        planning = self._planning
        by_watermark = self.settings.clock != "wall" or wall is None
        if remembering and not by_watermark:
            out += self._fire(self._clock(wall))
        for event, ticket, key in released:
            if remembering and (due := self._pass(event, by_watermark)):
                out += due
            subject = event.subject or ""
            last = self._released_last.get(subject)
            late = last is not None and key <= last
            if late:
                if late_policy is LatePolicy.SKIP:
                    tally.count_skip(partition, event.type, Skip.LATE)
                    self._tracker.finish(ticket, event.id)
                    continue
                tally.late_processed += 1
            else:
                self._released_last[subject] = key
            verdict = table.evaluate(event)
            outcome = verdict.outcome
            fulfilled = bool(table.expecting) and memory.fulfil(event, table.expecting)
            if outcome is Outcome.MATCHED:
                rules = verdict.rules
                if aging and not (rules := self._fresh(event, rules, wall)):
                    tally.count_skip(partition, event.type, Skip.STALE)
                    self._tracker.finish(ticket, event.id)
                    continue
                acting = self._matched(event, rules)
                if acting and planning:
                    self._count_planned(acting)
                elif acting:
                    out.append(self._hold(Work(event, acting, subject, key, late, ticket, last)))
                    continue
            elif fulfilled:  # only an expectation's filter matched it
                tally.count(partition, event.type, Fate.MATCHED)
            elif outcome is Outcome.UNMATCHED:
                tally.count(partition, event.type, Fate.UNMATCHED)
            else:  # the table was reloaded while the event waited
                reason = Skip.FOREIGN_TOPIC if outcome is Outcome.FOREIGN_TOPIC else Skip.UNHANDLED_TYPE
                tally.count_skip(partition, event.type, reason)
            self._tracker.finish(ticket, event.id)
        return out

    def _matched(self, event: Event, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        """Count a matched event and its rules' matches, and hand it to the rules that remember (the
        table's ``remembers`` has made the caller watch the memory already); the rules that act now."""
        tally = self.tally
        tally.count(self.partition_id, event.type, Fate.MATCHED)
        matches = tally.rule_matches
        for rule in rules:
            matches[rule.name] += 1
        if self.table.remembers and any(rule.remembers for rule in rules):
            rules = self._remember(event, rules)
        return tuple([rule for rule in rules if rule.actions])

    def _count_planned(self, rules: tuple[Rule, ...]) -> None:
        """A dry run that only counts (``planning``): the rules' actions, counted as planned."""
        count = self.tally.count_action
        for rule in rules:
            for spec in rule.actions:
                count(rule.name, spec.type, ActionFate.PLANNED)

    def _pass(self, event: Event, by_watermark: bool) -> list[Work]:
        """The event's time passes: move the watermark, and in a replay fire what fell due before it."""
        moment = event_time(event, self._watermark)
        if moment <= self._watermark:
            return []
        self._watermark = moment
        due = self._memory.next_due if by_watermark else None
        return self._fire(moment) if due is not None and due <= moment else []

    def _remember(self, event: Event, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        """Start the expectations and join the groups of the rules that remember; the other rules.
        Their actions run when an expectation expires or a group notifies, not now."""
        self._memory.take(event, tuple([rule for rule in rules if rule.remembers]), self._watermark)
        return tuple([rule for rule in rules if not rule.remembers])

    def _fresh(self, event: Event, rules: tuple[Rule, ...], wall: float | None) -> tuple[Rule, ...]:
        """The rules whose max_age the event's age is within; the others count it as stale.

        The age runs from the event's time to ``wall`` (or, without it, to its enqueued time); an
        event whose age cannot be told (no time) is never stale.
        """
        if event.time is None:
            return rules
        if wall is None:
            enqueued = event.message.position.enqueued_time
            if enqueued is None:
                return rules
            wall = enqueued.timestamp()
        age = wall - event.time.timestamp()
        default = self.settings.max_age
        fresh: list[Rule] = []
        stale = self.tally.rule_stale
        for rule in rules:
            limit = rule.max_age if rule.max_age is not None else default
            if limit is not None and age > limit:
                stale[rule.name] += 1
            else:
                fresh.append(rule)
        return rules if len(fresh) == len(rules) else tuple(fresh)

    # --- finishing ----------------------------------------------------------------------------

    def finish(self, work: Work) -> None:
        """The work's actions are done or dead-lettered. A subject's work finishes in release order."""
        pending = self._unfinished[work.subject]
        if pending[0] is not work:
            raise ValueError(f"work on subject {work.subject!r} finished out of its release order")
        pending.popleft()
        if not pending:
            del self._unfinished[work.subject]
        if work.ticket is None:
            if work.memo is not None:
                self._memory.done(work.rules[0].name, work.memo)
            return
        self._tracker.finish(work.ticket, work.event.id)

    # --- observing ----------------------------------------------------------------------------

    @property
    def checkpoint(self) -> Position | None:
        """The highest position with every event at or below it finished."""
        return self._tracker.checkpoint

    @property
    def open_messages(self) -> int:
        """Messages read and not yet behind the checkpoint (held, in flight, or behind one that is)."""
        return len(self._tracker)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def state(self, *, max_ids: int | None = None, max_subjects: int | None = None) -> SavedState:
        """The state to persist beside :attr:`checkpoint`: only what finished events justify.

        A subject with unfinished work keeps the key released before its first unfinished event, and
        the ids of unfinished events (held or in flight) are left out, so that after a restart from
        the checkpoint they are neither taken for late events nor for duplicates. ``max_ids`` and
        ``max_subjects`` keep only the newest ids and subjects, to keep the persisted state small:
        what is left out only weakens the recognition of re-deliveries and stragglers after a
        restart. Ids finished beyond the checkpoint are always kept: they prevent repeated actions.
        """
        unfinished = self._unfinished
        last_keys: list[tuple[str, SequencerKey]] = []
        for subject, key in self._released_last.items():
            pending = unfinished.get(subject)
            if pending is None:
                last_keys.append((subject, key))
            elif (prior := pending[0].prior) is not None:
                last_keys.append((subject, prior))
        open_ids = {work.event.id for pending in unfinished.values() for work in pending if work.ticket is not None}
        open_ids.update(held[0].id for held in self._buffer.held())
        recent = [i for i in self._seen if i not in open_ids]
        return SavedState(
            last_keys=tuple(_newest(last_keys, max_subjects)),
            recent_ids=tuple(_newest(recent, max_ids)),
            finished_beyond=tuple(self._tracker.finished_beyond()),
            pending=self._memory.stored() if self._memory.busy else (),
        )

    def counts(self) -> Tally:
        """The partition's tally, with the memory caps' counts brought up to date."""
        evictions = self.tally.evictions
        evictions["reorder_buffer_released_early"] = self._buffer.forced
        evictions["subjects_forgotten"] = self._released_last.evicted
        evictions["ids_forgotten"] = self._seen.evicted
        pending = self.tally.pending
        pending.clear()
        pending.update(self._memory.pending_counts())
        return self.tally
