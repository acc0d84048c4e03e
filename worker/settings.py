"""The settings records each part of the worker takes: small, frozen, and built in one place.

``worker run`` reads its settings once (:mod:`worker.config`) and splits them into these records;
``replay`` and the tests build them directly. They hold plain values only, so every module can take
the one it needs without depending on how settings are read.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from worker.moments import EARLIEST, StartPosition


@dataclass(frozen=True, slots=True)
class Scope:
    """The hub and consumer group that checkpoints belong to."""

    namespace: str
    eventhub: str
    consumer_group: str

    def prefix(self, kind: str) -> str:
        """The SDK's blob name prefix for ``kind`` (ownership, checkpoint), lower-cased as the SDK does."""
        return f"{self.namespace}/{self.eventhub}/{self.consumer_group}/{kind}/".lower()


class LatePolicy(enum.StrEnum):
    """What happens to an event whose subject has already seen a later one."""

    SKIP = "skip"  # skip it and count it (the default)
    PROCESS = "process"  # evaluate it anyway; its actions are marked late


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """Ordering, dedupe and memory caps of one partition's core (:mod:`worker.core.partition`)."""

    #: Seconds of enqueued time an event waits for earlier events of its subject.
    window: float = 5.0
    late: LatePolicy = LatePolicy.SKIP
    #: Events held in the reorder buffer; past it the earliest leaves early (counted).
    max_buffered: int = 10_000
    #: Subjects whose last sequencer is remembered, to recognise late events (about 350 bytes each;
    #: ordering within the window is the buffer's job, this only recognises stragglers).
    max_subjects: int = 20_000
    #: Event ids remembered, to recognise duplicates.
    max_ids: int = 100_000
    #: (event type, filter-style key) pairs: where an event type keeps its sequencer string.
    sequencers: tuple[tuple[str, str], ...] = ()
    #: Seconds: rules without a ``max_age`` of their own do not act on older events (None: no limit).
    max_age: float | None = None
    #: What time expectations and groups fall due by: the events' enqueued times as they are
    #: released (a replay, deterministic), or the wall clock minus the window (the live worker).
    clock: Literal["watermark", "wall"] = "watermark"
    #: Expectations and groups pending per partition; past it new ones are forgotten (counted).
    max_pending: int = 10_000
    #: Events a group notification lists; the rest are counted only.
    max_group_events: int = 100


@dataclass(frozen=True, slots=True)
class DriverSettings:
    """How one partition's driver runs actions (:mod:`worker.driver`), and the hand-over bound."""

    #: Actions running at once in a partition.
    concurrency: int = 16
    #: Messages read ahead of the checkpoint before reading waits.
    max_open: int = 20_000
    #: Messages received and not yet taken in by a partition before the receiver waits (live worker).
    inbox: int = 3_000


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Where to read, and how the consumer client receives and balances."""

    connection_string: str | None
    namespace: str | None
    eventhub: str
    consumer_group: str
    prefetch: int
    batch_size: int
    max_wait: float
    strategy: str
    interval: float
    expiry: float
    stall_timeout: float
    #: Where a partition without a checkpoint starts reading.
    start: StartPosition = EARLIEST
    #: Seconds a partition just claimed holds what it reads, before it acts (0: at once).
    settle: float = 0.0

    def __repr__(self) -> str:  # never show the connection string's key
        return f"HubSettings(eventhub={self.eventhub!r}, consumer_group={self.consumer_group!r})"


@dataclass(frozen=True, slots=True)
class CheckpointSettings:
    """Where checkpoints, ownership and the pipeline state go, and how often."""

    connection_string: str | None
    account_url: str | None
    container: str
    directory: Path | None
    #: Seconds between a partition's checkpoint writes, and events after which one is written early.
    interval: float = 10.0
    events: int = 5000
    #: Newest event ids and subjects persisted with each checkpoint.
    state_ids: int = 10_000
    state_subjects: int = 10_000
    #: Seconds a checkpoint write (or claim) may take before it counts as failed.
    timeout: float = 10.0

    def __repr__(self) -> str:
        where = self.directory or self.account_url or "connection string"
        return f"CheckpointSettings(where={str(where)!r}, container={self.container!r})"


@dataclass(frozen=True, slots=True)
class ConsumerGroupSettings:
    """What the ``checkpoints`` commands take: the hub, the consumer group's checkpoints, how long a claim lives."""

    connection_string: str | None
    #: The fully qualified namespace, reached with DefaultAzureCredential (without a connection string).
    namespace: str | None
    scope: Scope
    checkpoints: CheckpointSettings
    #: Seconds a claim on a partition lives unless renewed.
    expiry: float

    def __repr__(self) -> str:  # never show the connection string's key
        return f"ConsumerGroupSettings(scope={self.scope!r}, checkpoints={self.checkpoints!r})"


@dataclass(frozen=True, slots=True)
class OpsSettings:
    """Where the health and metrics server listens (port 0: not at all)."""

    host: str
    port: int


AzureCloudName = Literal["AzureCloud", "AzureChinaCloud", "AzureUSGovernment"]


@dataclass(frozen=True, slots=True)
class AzureCloud:
    """One Azure cloud's endpoints, as the Azure CLI names the cloud."""

    #: Azure Resource Manager.
    resource_manager: str
    #: Microsoft Entra ID's authority host.
    authority: str
    #: The audience of Azure ML's data plane (a batch endpoint's scoring URI takes its tokens).
    azureml: str
    #: Azure ML studio, where the notifications' links go.
    studio: str


#: The clouds the actions reach (``az cloud list``), with the endpoints azure-ai-ml knows them by.
AZURE_CLOUDS: Final[dict[str, AzureCloud]] = {
    "AzureCloud": AzureCloud(
        "https://management.azure.com", "login.microsoftonline.com", "https://ml.azure.com", "https://ml.azure.com"
    ),
    "AzureChinaCloud": AzureCloud(
        "https://management.chinacloudapi.cn",
        "login.chinacloudapi.cn",
        "https://ml.azure.cn",
        "https://studio.ml.azure.cn",
    ),
    "AzureUSGovernment": AzureCloud(
        "https://management.usgovcloudapi.net", "login.microsoftonline.us", "https://ml.azure.us", "https://ml.azure.us"
    ),
}


def insecure_url(url: str) -> str | None:
    """Why ``url`` may not carry a token (None when it may): it must be ``https://``, or ``http://`` to a
    loopback address (a test double on this host)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http:// or https:// URL with a host"
    if parts.scheme == "https":
        return None
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return None if loopback else f"{url!r}: a token is sent over https only (http only to a loopback address)"


@dataclass(frozen=True, slots=True)
class AzureSettings:
    """Which Azure the actions that call Azure services reach, with the worker's Entra ID credential."""

    cloud: AzureCloudName = "AzureCloud"
    #: Azure Resource Manager instead of the cloud's own (a test double, a private link).
    resource_manager_override: str | None = None
    #: The Microsoft.MachineLearningServices API version of every Azure ML request to ARM.
    azureml_api_version: str = "2025-12-01"

    @property
    def resource_manager(self) -> str:
        return (self.resource_manager_override or AZURE_CLOUDS[self.cloud].resource_manager).rstrip("/")

    @property
    def resource_manager_scope(self) -> str:
        """The scope of tokens for ARM: the cloud's, whatever the override (a private link keeps its audience)."""
        return AZURE_CLOUDS[self.cloud].resource_manager + "/.default"

    @property
    def azureml_scope(self) -> str:
        return AZURE_CLOUDS[self.cloud].azureml + "/.default"

    @property
    def authority(self) -> str:
        return AZURE_CLOUDS[self.cloud].authority

    @property
    def studio(self) -> str:
        return AZURE_CLOUDS[self.cloud].studio


LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]


@dataclass(frozen=True, slots=True)
class ProcessingSettings:
    """What the processing side of ``worker run`` needs: in this process, or sent to the pipeline process."""

    #: Rules files and directories, listed again at each load.
    rules: tuple[Path, ...]
    scope: Scope
    checkpoints: CheckpointSettings
    core: CoreSettings = field(default_factory=CoreSettings)
    driver: DriverSettings = field(default_factory=DriverSettings)
    #: The dead-letter lane: a directory, or a blob container URL.
    dead_letters: str = "dead-letters"
    #: A shadow run: evaluate, execute nothing, count each action as planned.
    dry_run: bool = False
    log_level: LogLevel = "info"
    log_format: LogFormat = "auto"
    #: Least level logged of the libraries' own records (the Azure SDK, aiohttp, asyncio).
    library_log_level: LogLevel = "warning"
    #: The Azure cloud and Azure ML API version the actions use.
    azure: AzureSettings = field(default_factory=AzureSettings)
