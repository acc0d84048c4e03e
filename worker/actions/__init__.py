"""Actions: what matched rules do.

The pure part, loaded with the rules: :mod:`~worker.actions.base` (what an action is),
:mod:`~worker.actions.registry` (the table of action types), one module per action type (its
parameters, and an executor that builds what to send), :mod:`~worker.actions.templates` and
:mod:`~worker.actions.secrets` for their parameters, :mod:`~worker.actions.retry` and
:mod:`~worker.actions.breaker` (delivery decisions). The I/O part, loaded only to run actions:
:mod:`~worker.actions.runner` (attempts, retries, circuits), :mod:`~worker.actions.services` and
the clients it makes (``http_client``, ``smtp_client``, ``hub_client``, ``tokens``), and
:mod:`~worker.actions.deadletters` (the lanes).
"""

from worker.actions.base import ActionParams, ActionSpec, Executor, PlannedAction, idempotency_key
from worker.actions.registry import ActionType, action_types

__all__ = ["ActionParams", "ActionSpec", "ActionType", "Executor", "PlannedAction", "action_types", "idempotency_key"]
