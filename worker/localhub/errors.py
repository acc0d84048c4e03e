"""Errors of the local hub.

    LocalHubError
    ├── ProtocolError   bytes from a peer are not the AMQP 1.0 the hub understands (the hub drops
    │                   that connection and logs why)
    └── SelectorError   a receiver's selector filter is not one Event Hubs accepts

Messages name the bad value and what was expected.
"""

from __future__ import annotations

from worker.errors import WorkerError


class LocalHubError(WorkerError):
    """Base class of the local hub's errors."""


class ProtocolError(LocalHubError):
    """Bytes from a peer are not well-formed AMQP 1.0, or not what the hub expects there."""


class SelectorError(LocalHubError):
    """A selector filter (``amqp.annotation.x-opt-offset > '42'``) the hub cannot apply."""
