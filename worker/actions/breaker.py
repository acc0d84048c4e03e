"""A circuit breaker per action target, without I/O: the caller passes the time.

Closed, requests go through; after ``failures`` transient failures in a row the circuit opens and
requests fail at once, without reaching the target. After ``reset_after`` seconds it is half-open:
``probes`` requests go through; a success closes it, a failure opens it again. So an outage costs a
few probes, not a storm of requests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    #: Transient failures in a row that open the circuit.
    failures: int = 5
    #: Seconds the circuit stays open before probes may go.
    reset_after: float = 30.0
    #: Requests let through at once while half-open.
    probes: int = 1


class CircuitBreaker:
    """One target's circuit. Call :meth:`allow` before a request, then exactly one of
    :meth:`succeeded`, :meth:`failed` or :meth:`abandoned` for each request allowed."""

    __slots__ = ("_failures", "_opened_at", "_probing", "settings", "state")

    def __init__(self, settings: BreakerSettings | None = None) -> None:
        self.settings = settings or BreakerSettings()
        self.state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = 0

    def allow(self, now: float) -> bool:
        """Whether a request may go now (a half-open circuit counts it as a probe)."""
        if self.state is CircuitState.OPEN:
            if now < self._opened_at + self.settings.reset_after:
                return False
            self.state = CircuitState.HALF_OPEN
            self._probing = 0
        if self.state is CircuitState.HALF_OPEN:
            if self._probing >= self.settings.probes:
                return False
            self._probing += 1
        return True

    def opens_in(self, now: float) -> float:
        """Seconds until a probe may go: 0 unless the circuit is open."""
        if self.state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.settings.reset_after - now)

    def succeeded(self) -> None:
        """The target answered: it is up."""
        self.state = CircuitState.CLOSED
        self._failures = 0
        self._probing = 0

    def failed(self, now: float) -> None:
        """A transient failure: the target is unreachable, overloaded or too slow."""
        if self.state is CircuitState.HALF_OPEN:
            self._open(now)
        elif self.state is CircuitState.CLOSED:
            self._failures += 1
            if self._failures >= self.settings.failures:
                self._open(now)
        # OPEN: a request let through before the circuit opened; it changes nothing.

    def abandoned(self) -> None:
        """A request allowed but not made, or ended without an answer about the target (cancelled)."""
        if self.state is CircuitState.HALF_OPEN and self._probing > 0:
            self._probing -= 1

    def _open(self, now: float) -> None:
        self.state = CircuitState.OPEN
        self._opened_at = now
        self._failures = 0
        self._probing = 0
