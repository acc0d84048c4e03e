"""Building frozen records fast, where one is built per event.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, which costs about as
much as parsing a small event body. The few hot spots (reading, decoding, releasing work) set the
slots directly instead; the records stay frozen for everyone else.
"""

from __future__ import annotations

from collections.abc import Callable


def slot_setters(cls: type, *names: str) -> tuple[Callable[[object, object], None], ...]:
    """The setters of ``cls``'s slots ``names``, to fill an instance made by ``object.__new__(cls)``."""
    return tuple(cls.__dict__[name].__set__ for name in names)
