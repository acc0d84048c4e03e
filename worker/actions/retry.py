"""Retry decisions, without I/O: how many attempts, and how long to wait between them.

The wait after a failed attempt is exponential backoff with full jitter, capped; a target's
``Retry-After`` (capped too) and an open circuit can lengthen it. The random source is passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per action, and the exponential backoff (with full jitter) between them."""

    attempts: int = 3
    first_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.first_delay * 2 ** (attempt - 1))
        return rng.uniform(0, ceiling)

    def wait(
        self, attempt: int, rng: random.Random, *, retry_after: float | None = None, circuit_opens_in: float = 0.0
    ) -> float:
        """The wait after failed attempt ``attempt``: the backoff, or longer when the target asked for it
        (``Retry-After``, capped at ``max_delay``) or its circuit lets no request through for a while."""
        wait = self.delay(attempt, rng)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return max(wait, circuit_opens_in)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header's wait in seconds (delay-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - now).total_seconds())
