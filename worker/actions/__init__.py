"""Actions: what matched rules do. Importing this package registers the built-in action types."""

from worker.actions import azureml, datafactory, devops, eventhub, file, github, log, mail, webhook
from worker.actions.base import ActionParams, ActionSpec, Executor, PlannedAction, idempotency_key
from worker.actions.registry import ActionType, action_types, register

__all__ = [
    "ActionParams",
    "ActionSpec",
    "ActionType",
    "Executor",
    "PlannedAction",
    "action_types",
    "azureml",
    "datafactory",
    "devops",
    "eventhub",
    "file",
    "github",
    "idempotency_key",
    "log",
    "mail",
    "register",
    "webhook",
]
