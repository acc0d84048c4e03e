"""Event Grid filter keys: dot paths into an event's JSON object.

``data.ModelTags.stage`` steps into nested objects, one member per dot (there is no escaping, as in
Event Grid). Each member is looked up by its exact name first, then ignoring case, so a rule written
against the docs' PascalCase matches the camelCase payloads real workspaces send. A path that
would step into an array or a scalar finds nothing: Event Grid does not filter on arrays of
objects.

Where an object has several members equal ignoring case (Azure's events never do), the exact
spelling wins, then the spelling differing only in the case of its first letter (camelCase against
PascalCase, tried directly because it is the common case), then the first in the object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


#: What a lookup returns when the key is not in the event.
MISSING: Final = _Missing()


#: A compiled key: per member, its spelling and the spelling with its first letter's case swapped.
KeyPath = tuple[tuple[str, str], ...]


def split_key(key: str) -> tuple[str, ...] | None:
    """The members of a dot path, or None when the key is malformed (empty, or an empty member)."""
    parts = tuple(key.split("."))
    return parts if all(parts) else None


def compile_key(key: str) -> KeyPath | None:
    """The key ready for :func:`lookup`, or None when it is malformed."""
    parts = split_key(key)
    if parts is None:
        return None
    return tuple((part, part[0].swapcase() + part[1:]) for part in parts)


def lookup(document: Mapping[str, object], path: KeyPath) -> object:
    """The value at ``path`` in ``document``, or :data:`MISSING`."""
    current: object = document
    for member, variant in path:
        if type(current) is not dict:
            return MISSING
        value = current.get(member, MISSING)
        if value is MISSING:
            value = current.get(variant, MISSING)
            if value is MISSING:
                value = _get_ignoring_case(current, member)
                if value is MISSING:
                    return MISSING
        current = value
    return current


def _get_ignoring_case(mapping: dict[str, object], member: str) -> object:
    size, folded = len(member), member.casefold()
    for name, value in mapping.items():
        # Comparing lengths first skips most members without folding them; case folding that
        # changes a length (such as German sharp s) does not occur in event keys.
        if len(name) == size and name.casefold() == folded:
            return value
    return MISSING


def member(mapping: Mapping[str, object], name: str) -> object:
    """The member ``name`` of one JSON object, looked up as one step of a key (exact, then ignoring
    case), or :data:`MISSING`."""
    if not name:
        return mapping.get(name, MISSING)
    value = mapping.get(name, MISSING)
    if value is MISSING:
        value = mapping.get(name[0].swapcase() + name[1:], MISSING)
        if value is MISSING and isinstance(mapping, dict):
            value = _get_ignoring_case(mapping, name)
    return value
