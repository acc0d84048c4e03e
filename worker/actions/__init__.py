"""Actions: what matched rules do.

The pure part, loaded with the rules: :mod:`~worker.actions.base` (what an action is),
:mod:`~worker.actions.registry` (the table of action types), one module per action type (its
parameters, and an executor that builds what to send), :mod:`~worker.actions.templates` and
:mod:`~worker.actions.secrets` for their parameters, :mod:`~worker.actions.preview` (an action's
parameters shown instead of done), :mod:`~worker.actions.retry` and :mod:`~worker.actions.breaker`
(delivery decisions), :mod:`~worker.actions.clients` (the interfaces of the clients, and what an
executor hands them). The I/O part, loaded only to run actions: :mod:`worker.actions.delivery`.

May use: the records and helpers at the package's top (events, keys, errors, jsontext, masking,
blob URLs). Knows no worker: nothing of the core, the live worker, replay or the rules files.
"""

from worker.actions.base import ActionParams, ActionSpec, Executor, PlannedAction, idempotency_key
from worker.actions.registry import ActionType, action_types

__all__ = ["ActionParams", "ActionSpec", "ActionType", "Executor", "PlannedAction", "action_types", "idempotency_key"]
