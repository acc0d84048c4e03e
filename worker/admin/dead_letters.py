"""What a dead-letter lane holds, summarised for ``dead-letters list``.

Counts by rule, action type and reason, each with its oldest and newest dead-letter time; and the
whole lane's. Pure: the letters come in read, and the summary goes out as records, a JSON document
or the lines of a table.

- A letter's **reason** is its last attempt's: the error's short name (``unavailable``,
  ``rejected``, ``render``, ``circuit_open``, ``failed``; see :class:`~worker.errors.ActionError`).
  Letters written before reasons were recorded give their last attempt's kind instead,
  ``transient`` or ``permanent``; a letter without attempts, ``unknown``.
- Its **time** is its last attempt's: when the action was given up and dead-lettered.
- Each group names its newest letter and that letter's last error, to look at with
  ``dead-letters show``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from worker.actions.delivery.deadletters import Letter

#: The most of a group's last error a table line shows (``--json`` shows all of it).
ERROR_WIDTH: Final = 100
#: The table's column of numbers, aligned right.
_COUNT_COLUMN: Final = 3


@dataclass(frozen=True, slots=True)
class Group:
    """The letters of one rule, action type and reason."""

    rule: str
    action_type: str
    reason: str
    count: int
    #: The oldest and newest dead-letter times (None when no letter of the group has one).
    oldest: datetime | None
    newest: datetime | None
    #: The id of the group's newest letter, and its last error.
    newest_letter: str
    last_error: str


@dataclass(frozen=True, slots=True)
class LaneSummary:
    """Every group, by rule, action type and reason; and the whole lane's count and times."""

    groups: tuple[Group, ...]
    total: int
    oldest: datetime | None
    newest: datetime | None


def reason_of(letter: Letter) -> str:
    """Why the letter's action was given up (see the module's docstring)."""
    if not letter.attempts:
        return "unknown"
    last = letter.attempts[-1]
    if last.reason is not None:
        return last.reason
    return "transient" if last.transient else "permanent"


def dead_lettered_at(letter: Letter) -> datetime | None:
    """When the letter's action was given up: its last attempt's time."""
    return letter.attempts[-1].at if letter.attempts else None


@dataclass(slots=True)
class _Running:
    count: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    newest_letter: str = ""
    last_error: str = ""

    def add(self, letter_id: str, letter: Letter) -> None:
        self.count += 1
        moment = dead_lettered_at(letter)
        if moment is not None and (self.oldest is None or moment < self.oldest):
            self.oldest = moment
        # The newest time wins; the first letter stands in until a letter with a time comes.
        if self.count == 1 or (moment is not None and (self.newest is None or moment >= self.newest)):
            if moment is not None:
                self.newest = moment
            self.newest_letter = letter_id
            self.last_error = letter.attempts[-1].error if letter.attempts else ""


def summarize(letters: Iterable[tuple[str, Letter]]) -> LaneSummary:
    """Summarise ``(id, letter)`` pairs, consumed one at a time (a lane's letters are not held)."""
    groups: dict[tuple[str, str, str], _Running] = {}
    total = _Running()
    for letter_id, letter in letters:
        key = (letter.rule, letter.action_type, reason_of(letter))
        groups.setdefault(key, _Running()).add(letter_id, letter)
        total.add(letter_id, letter)
    return LaneSummary(
        tuple(
            Group(*key, run.count, run.oldest, run.newest, run.newest_letter, run.last_error)
            for key, run in sorted(groups.items())
        ),
        total.count,
        total.oldest,
        total.newest,
    )


def summary_document(summary: LaneSummary) -> dict[str, object]:
    """The summary as one JSON document: ``groups`` (a list) and ``total``; times in ISO 8601."""
    return {
        "groups": [
            {
                "rule": group.rule,
                "action_type": group.action_type,
                "reason": group.reason,
                "count": group.count,
                "oldest": _iso(group.oldest),
                "newest": _iso(group.newest),
                "newest_letter": group.newest_letter,
                "last_error": group.last_error,
            }
            for group in summary.groups
        ],
        "total": {"count": summary.total, "oldest": _iso(summary.oldest), "newest": _iso(summary.newest)},
    }


def summary_table(summary: LaneSummary) -> list[str]:
    """The summary as an aligned table, a line per group, then the total; times in UTC."""
    header = ("RULE", "ACTION", "REASON", "COUNT", "OLDEST", "NEWEST", "LAST ERROR")
    rows = [
        (g.rule, g.action_type, g.reason, str(g.count), _short(g.oldest), _short(g.newest), _cut(g.last_error))
        for g in summary.groups
    ]
    rows.append(("total", "", "", str(summary.total), _short(summary.oldest), _short(summary.newest), ""))
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header) - 1)]
    lines = []
    for row in (header, *rows):
        cells = [
            cell.rjust(width) if column == _COUNT_COLUMN else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join((*cells, row[-1])).rstrip())
    return lines


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _short(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else "-"


def _cut(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= ERROR_WIDTH else line[: ERROR_WIDTH - 3] + "..."
