"""Bounded memory: a set and a map that forget their oldest entries, and count what they forget.

The pipeline remembers subjects and event ids for as long as it runs; these caps keep that memory
fixed whatever the input, and the eviction counts make the forgetting visible in the accounting.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class RecentSet(Generic[K]):
    """The most recently added keys, at most ``capacity`` of them."""

    __slots__ = ("_keys", "capacity", "evicted")

    def __init__(self, capacity: int, keys: Iterable[K] = ()) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.evicted = 0
        self._keys: OrderedDict[K, None] = OrderedDict()
        for key in keys:
            self.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[K]:
        """Oldest first."""
        return iter(self._keys)

    def discard(self, key: K) -> None:
        """Forget ``key`` if it is held (not counted as evicted)."""
        self._keys.pop(key, None)

    def add(self, key: K) -> None:
        keys = self._keys
        if key in keys:
            keys.move_to_end(key)
            return
        keys[key] = None
        if len(keys) > self.capacity:
            keys.popitem(last=False)
            self.evicted += 1


class RecentMap(Generic[K, V]):
    """The most recently set keys with their values, at most ``capacity`` of them."""

    __slots__ = ("_items", "capacity", "evicted")

    def __init__(self, capacity: int, items: Iterable[tuple[K, V]] = ()) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.evicted = 0
        self._items: OrderedDict[K, V] = OrderedDict()
        for key, value in items:
            self[key] = value

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def __setitem__(self, key: K, value: V) -> None:
        items = self._items
        if key in items:
            items.move_to_end(key)
        items[key] = value
        if len(items) > self.capacity:
            items.popitem(last=False)
            self.evicted += 1

    def items(self) -> Iterator[tuple[K, V]]:
        """Least recently set first."""
        return iter(self._items.items())
