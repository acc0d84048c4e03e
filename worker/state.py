"""The pipeline state saved beside each partition's checkpoint, and its JSON form.

A checkpoint alone says where to resume; this small state says what was already done around it:
per subject the last sequencer key released, the ids of recent events, and the ids of events
finished beyond the checkpoint. With it, a restart from the checkpoint neither repeats a finished
action nor takes an unfinished event for a duplicate or a late one. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from worker.errors import StateError
from worker.ordering import SequencerKey

_VERSION = 1


@dataclass(frozen=True, slots=True)
class SavedState:
    """What to persist beside a partition's checkpoint; only what finished events justify."""

    #: Per subject, the last released sequencer key, or for a subject with unfinished work the key
    #: released before it.
    last_keys: tuple[tuple[str, SequencerKey], ...] = ()
    #: Ids of recent events, oldest first, without those still held or in flight.
    recent_ids: tuple[str, ...] = ()
    #: Ids of events finished in messages beyond the checkpoint.
    finished_beyond: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": _VERSION,
                "last_keys": [[subject, list(key)] for subject, key in self.last_keys],
                "recent_ids": self.recent_ids,
                "finished_beyond": self.finished_beyond,
            }
        )

    @classmethod
    def from_json(cls, data: bytes, where: str) -> SavedState:
        """Read a state written by :meth:`to_json`; ``where`` names the blob or file in errors."""
        try:
            raw = orjson.loads(data)
            version = raw.get("version")
            state = cls(
                last_keys=tuple((str(s), _key(k)) for s, k in raw["last_keys"]),
                recent_ids=tuple(str(i) for i in raw["recent_ids"]),
                finished_beyond=tuple(str(i) for i in raw["finished_beyond"]),
            )
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{where}: the pipeline state is unreadable ({exc}); remove it to start afresh") from exc
        if version != _VERSION:
            raise StateError(f"{where}: unsupported pipeline state version {version!r} (expected {_VERSION})")
        return state


def _key(raw: object) -> SequencerKey:
    if not isinstance(raw, list) or len(raw) != 4:
        raise ValueError(f"a sequencer key must be a list of 4, got {raw!r}")
    kind, primary, sequence, index = raw
    if type(kind) is not int or type(primary) not in (int, str) or type(sequence) is not int or type(index) is not int:
        raise ValueError(f"bad sequencer key {raw!r}")
    return (kind, primary, sequence, index)
