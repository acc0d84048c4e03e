"""The action types, as one explicit table: what the rules loader validates ``actions`` entries against.

Each row names the type, its parameters (a pydantic model, checked when the rules load), its
executor, a summary, and its default retry policy and timeout. Every module the table imports is
free of I/O libraries: an executor reaches the network only through the shared clients it is
given (:class:`~worker.actions.clients.Clients`), so ``validate`` and ``explain`` load no network
library. A new action type is a module with its parameters and executor, and a row here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.actions.azureml.batch import AzureMLBatchEndpointExecutor, AzureMLBatchEndpointParams
from worker.actions.azureml.deploy import AzureMLDeployExecutor, AzureMLDeployParams
from worker.actions.azureml.job import AzureMLJobExecutor, AzureMLJobParams
from worker.actions.azureml.pipeline import AzureMLPipelineExecutor, AzureMLPipelineParams
from worker.actions.base import ActionParams, Executor
from worker.actions.chat.slack import SlackExecutor, SlackParams
from worker.actions.chat.teams import TeamsExecutor, TeamsParams
from worker.actions.clients import Clients
from worker.actions.datafactory import DataFactoryPipelineExecutor, DataFactoryPipelineParams
from worker.actions.devops import AzureDevOpsPipelineExecutor, AzureDevOpsPipelineParams
from worker.actions.eventhub import EventHubExecutor, EventHubParams
from worker.actions.file import FileExecutor, FileParams
from worker.actions.github import GitHubWorkflowExecutor, GitHubWorkflowParams
from worker.actions.log import LogExecutor, LogParams
from worker.actions.mail import MailExecutor, MailParams
from worker.actions.retry import RetryPolicy
from worker.actions.webhook import WebhookExecutor, WebhookParams


@dataclass(frozen=True, slots=True)
class ActionType:
    name: str
    params: type[ActionParams]
    #: Builds the executor for one action entry from its validated parameters and the shared clients.
    executor: Callable[[Any, Clients], Executor]
    summary: str
    #: The retry policy of actions of this type whose rule sets none.
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Seconds one attempt may take.
    timeout: float = 30.0
    #: Why the type is on its way out, and what replaces it: ``validate`` warns of each use.
    deprecated: str | None = None
    #: Requests a second at most to one target (a chat service's own limit): the actions beyond it
    #: wait their turn, a paced series instead of refused requests. None: no pace.
    rate: float | None = None


def _table(*types: ActionType) -> Mapping[str, ActionType]:
    return {action_type.name: action_type for action_type in types}


_BUILT_IN = _table(
    ActionType("log", LogParams, LogExecutor, "write a structured log event"),
    ActionType("file", FileParams, FileExecutor, "append a JSON line per action to a file"),
    ActionType(
        "webhook",
        WebhookParams,
        WebhookExecutor,
        "send an HTTP request (JSON body from a template, optional HMAC signature)",
        retry=RetryPolicy(attempts=5, first_delay=1.0, max_delay=60.0),
        timeout=30.0,
    ),
    ActionType(
        "teams",
        TeamsParams,
        TeamsExecutor,
        "post to a Microsoft Teams channel through its Workflows webhook (by default an Adaptive Card per event type)",
        retry=RetryPolicy(attempts=5, first_delay=1.0, max_delay=60.0),
        timeout=30.0,
        # A Workflows webhook throttles above 4 requests a second.
        rate=4.0,
    ),
    ActionType(
        "slack",
        SlackParams,
        SlackExecutor,
        "post to a Slack channel through its incoming webhook (Block Kit, by default one per event type)",
        retry=RetryPolicy(attempts=5, first_delay=1.0, max_delay=60.0),
        timeout=30.0,
        # Slack takes about one message a second from a webhook, and answers 429 beyond.
        rate=1.0,
    ),
    ActionType(
        "email",
        MailParams,
        MailExecutor,
        "send a mail through SMTP (subject and body templates)",
        retry=RetryPolicy(attempts=5, first_delay=5.0, max_delay=120.0),
        timeout=60.0,
    ),
    ActionType(
        "azureml_batch_endpoint",
        AzureMLBatchEndpointParams,
        AzureMLBatchEndpointExecutor,
        "invoke an Azure ML batch endpoint (a pipeline component or a model deployment)",
        retry=RetryPolicy(attempts=4, first_delay=2.0, max_delay=60.0),
        timeout=60.0,
    ),
    ActionType(
        "azureml_job",
        AzureMLJobParams,
        AzureMLJobExecutor,
        "submit an Azure ML job from a registered pipeline or command component",
        retry=RetryPolicy(attempts=4, first_delay=2.0, max_delay=60.0),
        timeout=120.0,
    ),
    ActionType(
        "azureml_deploy",
        AzureMLDeployParams,
        AzureMLDeployExecutor,
        "deploy a registered model version to a managed online endpoint, then give it traffic",
        retry=RetryPolicy(attempts=3, first_delay=30.0, max_delay=300.0),
        # One attempt follows the deployment to its end: managed deployments take minutes, 10 or more.
        timeout=1800.0,
    ),
    ActionType(
        "azureml_pipeline",
        AzureMLPipelineParams,
        AzureMLPipelineExecutor,
        "submit a run of a published Azure ML pipeline (SDK v1)",
        retry=RetryPolicy(attempts=4, first_delay=2.0, max_delay=60.0),
        timeout=60.0,
        deprecated=(
            "published pipelines are a feature of Azure ML SDK and CLI v1, whose support ended on 2026-06-30: "
            "deploy the pipeline as a pipeline component deployment of a batch endpoint, and invoke it with "
            "azureml_batch_endpoint (docs/azureml.md#from-published-pipelines-to-batch-endpoints)"
        ),
    ),
    ActionType(
        "datafactory_pipeline",
        DataFactoryPipelineParams,
        DataFactoryPipelineExecutor,
        "create a Data Factory pipeline run (Azure Resource Manager)",
        retry=RetryPolicy(attempts=4, first_delay=2.0, max_delay=60.0),
        timeout=60.0,
    ),
    ActionType(
        "github_workflow",
        GitHubWorkflowParams,
        GitHubWorkflowExecutor,
        "start a GitHub Actions workflow (workflow_dispatch)",
        retry=RetryPolicy(attempts=4, first_delay=2.0, max_delay=60.0),
        timeout=30.0,
    ),
    ActionType(
        "azure_devops_pipeline",
        AzureDevOpsPipelineParams,
        AzureDevOpsPipelineExecutor,
        "run an Azure DevOps pipeline",
        retry=RetryPolicy(attempts=4, first_delay=2.0, max_delay=60.0),
        timeout=30.0,
    ),
    ActionType(
        "eventhub",
        EventHubParams,
        EventHubExecutor,
        "forward the event (or a templated body) to another Event Hub",
        retry=RetryPolicy(attempts=5, first_delay=1.0, max_delay=60.0),
        timeout=60.0,
    ),
)


def action_types() -> Mapping[str, ActionType]:
    """Every built-in action type, by name."""
    return _BUILT_IN
