"""The live worker's settings: read once at start-up from the environment (``WORKER_*``) and flags.

Every setting is a field of :class:`RunSettings`, with its default and its documentation; the
command line offers each as a flag (``--prefetch``), which wins over the variable
(``WORKER_PREFETCH``). A wrong or missing setting fails at start-up with a :class:`SettingsError`
naming the variable and the flag. Only the command line, ``worker run`` and the demo see this
class: it is split into the small frozen records of :mod:`worker.settings` that each part takes
(:meth:`RunSettings.hub`, :meth:`RunSettings.processing`...).

Its base, :class:`ConnectionSettings`, holds where the consumer group is (the hub, the group, the
checkpoint store, how long a claim lives): all the ``checkpoints`` commands take, with the same
variables and flags. They ignore the variables of ``run`` alone, which a pod's environment holds.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from worker.errors import SettingsError
from worker.keys import split_key
from worker.masking import MASKER
from worker.moments import EARLIEST, StartPosition, format_duration, parse_duration, parse_start
from worker.settings import (
    AzureCloudName,
    AzureSettings,
    CheckpointSettings,
    ConsumerGroupSettings,
    CoreSettings,
    DriverSettings,
    HubSettings,
    LatePolicy,
    LogFormat,
    LogLevel,
    OpsSettings,
    ProcessingSettings,
    Scope,
    insecure_url,
)

ENV_PREFIX = "WORKER_"

#: The default settle time, in balancing intervals. A peer started at the same moment whose first round
#: lost every claim to the first claimer (they all claim the unclaimed partitions at once) is in the
#: ownership records from its second round, one interval later: a partition just claimed acts at the
#: second round after its claim, when such a peer is counted (measured: bench/bench_start.py).
SETTLE_INTERVALS = 1.5

_PathList = Annotated[tuple[Path, ...], NoDecode]
# The Azure settings, read by `worker run` (RunSettings) and by `replay` (AzureTargets, alone).
_AzureCloud = Annotated[
    AzureCloudName,
    Field(
        description="the Azure cloud the Azure actions reach, as the Azure CLI names it (AzureCloud, "
        "AzureChinaCloud, AzureUSGovernment): its Resource Manager, Entra ID authority and Azure ML audience"
    ),
]
_ResourceManager = Annotated[
    str | None,
    Field(description="Azure Resource Manager instead of the cloud's (https; http only to a loopback address)"),
]
_AzureMLApiVersion = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d{2}-\d{2}(-preview)?$",
        description="the Microsoft.MachineLearningServices API version of the Azure ML actions' ARM requests",
    ),
]
_Sequencers = Annotated[tuple[tuple[str, str], ...], NoDecode]


class ConnectionSettings(BaseSettings):
    """Where a consumer group is: the Event Hub, the group, the checkpoint store, and how long a claim
    on a partition lives. What ``worker run`` and the ``checkpoints`` commands share."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", case_sensitive=False, env_ignore_empty=True
    )

    # --- the Event Hub -----------------------------------------------------------------------
    eventhub_connection_string: SecretStr | None = Field(
        None, description="Event Hubs connection string (a namespace or hub policy); or use eventhub_namespace"
    )
    eventhub_namespace: str | None = Field(
        None,
        description="fully qualified namespace (NAME.servicebus.windows.net), authenticated with "
        "DefaultAzureCredential (managed identity in Azure)",
    )
    eventhub_name: str | None = Field(None, description="the Event Hub; defaults to the connection string's EntityPath")
    consumer_group: str = Field("$Default", min_length=1, description="the consumer group the workers share")
    load_balancing_interval: float = Field(10.0, gt=0, description="seconds between ownership claims")
    ownership_expiry: float | None = Field(
        None, gt=0, description="seconds after which a silent owner's partitions are taken (default: 6 x interval)"
    )

    # --- checkpoints -------------------------------------------------------------------------
    storage_connection_string: SecretStr | None = Field(
        None, description="Azure Storage connection string for checkpoints and ownership"
    )
    storage_account_url: str | None = Field(
        None, description="blob endpoint (https://ACCOUNT.blob.core.windows.net), with DefaultAzureCredential"
    )
    checkpoint_container: str = Field(
        "eventhub-checkpoints", min_length=3, max_length=63, description="blob container, created if missing"
    )
    checkpoint_dir: Path | None = Field(
        None, description="a local directory instead of Blob Storage (one host only: development and demos)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for secret in (self.eventhub_connection_string, self.storage_connection_string):
            if secret is not None:
                MASKER.add_connection_string(secret.get_secret_value())
        problems = self._problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _problems(self) -> list[str]:
        """Every contradiction or omission among the settings, in the order they are reported."""
        return [*self._source_problems(), *self._claim_problems()]

    def _source_problems(self) -> list[str]:
        problems: list[str] = []
        hub_sources = [self.eventhub_connection_string is not None, self.eventhub_namespace is not None]
        if sum(hub_sources) != 1:
            problems.append(
                f"set exactly one of {_name('eventhub_connection_string')} and {_name('eventhub_namespace')}"
            )
        if self.eventhub_connection_string is not None:
            try:
                entity = _entity_path(self.eventhub_connection_string.get_secret_value())
            except ValueError as exc:  # the SDK's message names no part of the string
                problems.append(f"{_name('eventhub_connection_string')}: {exc}")
                entity = self.eventhub_name
            if entity is None and self.eventhub_name is None:
                problems.append(f"{_name('eventhub_name')} is required: the connection string names no EntityPath")
            elif entity is not None and self.eventhub_name not in (None, entity):
                problems.append(
                    f"{_name('eventhub_name')} is {self.eventhub_name!r} but the connection string's EntityPath is "
                    f"{entity!r}"
                )
        elif self.eventhub_name is None:
            problems.append(f"{_name('eventhub_name')} is required with {_name('eventhub_namespace')}")
        stores = [self.storage_connection_string, self.storage_account_url, self.checkpoint_dir]
        if sum(store is not None for store in stores) != 1:
            problems.append(
                f"set exactly one of {_name('storage_connection_string')}, {_name('storage_account_url')} and "
                f"{_name('checkpoint_dir')}"
            )
        return problems

    def _claim_problems(self) -> list[str]:
        if self.ownership_expiry is not None and self.ownership_expiry <= self.load_balancing_interval:
            return [
                f"{_name('ownership_expiry')} ({self.ownership_expiry}) must be longer than "
                f"{_name('load_balancing_interval')} ({self.load_balancing_interval})"
            ]
        return []

    # --- the parts each component takes ------------------------------------------------------

    @property
    def eventhub(self) -> str:
        """The Event Hub: named, or the connection string's EntityPath."""
        secret = self.eventhub_connection_string
        name = self.eventhub_name or (_entity_path(secret.get_secret_value()) if secret is not None else None)
        assert name is not None  # noqa: S101 - checked by the validator
        return name

    @property
    def expiry(self) -> float:
        """Seconds a claim on a partition lives unless renewed."""
        return self.ownership_expiry or 6 * self.load_balancing_interval

    def checkpoints(self) -> CheckpointSettings:
        """Where the checkpoints are (with the defaults of how often a worker writes them)."""
        secret = self.storage_connection_string
        return CheckpointSettings(
            connection_string=secret.get_secret_value() if secret is not None else None,
            account_url=self.storage_account_url,
            container=self.checkpoint_container,
            directory=self.checkpoint_dir,
        )

    def scope(self) -> Scope:
        """The hub and consumer group the checkpoints belong to; the namespace as the SDK's event
        processor names it in the checkpoint store (host[:port])."""
        secret = self.eventhub_connection_string
        if secret is not None:
            from azure.eventhub import parse_connection_string  # noqa: PLC0415 - the SDK only when connecting

            namespace = parse_connection_string(secret.get_secret_value()).fully_qualified_namespace
        else:
            assert self.eventhub_namespace is not None  # noqa: S101 - checked by the validator
            namespace = self.eventhub_namespace
        return Scope(namespace, self.eventhub, self.consumer_group)

    def consumer_group_settings(self) -> ConsumerGroupSettings:
        """What the ``checkpoints`` commands take."""
        secret = self.eventhub_connection_string
        return ConsumerGroupSettings(
            connection_string=secret.get_secret_value() if secret is not None else None,
            namespace=self.eventhub_namespace,
            scope=self.scope(),
            checkpoints=self.checkpoints(),
            expiry=self.expiry,
        )


class RunSettings(ConnectionSettings):
    """Everything ``worker run`` can be told. Field descriptions are the reference documentation."""

    # --- the Event Hub -----------------------------------------------------------------------
    prefetch: int = Field(3000, ge=1, description="events each partition's receiver asks for ahead")
    batch_size: int = Field(300, ge=1, description="most events handed to the pipeline at once, per partition")
    max_wait: float = Field(1.0, gt=0, description="seconds a partition waits for events before an idle tick")
    load_balancing_strategy: Literal["greedy", "balanced"] = Field(
        "greedy", description="greedy claims unowned partitions up to its share at once; balanced one per interval"
    )
    claim_settle: float | None = Field(
        None,
        ge=0,
        description="seconds a partition just claimed holds what it reads before acting, so that a worker "
        "starting at the same moment takes its share before anything is acted on twice (default: one and a "
        "half load balancing intervals; 0: act at once)",
    )
    stall_timeout: float = Field(
        120.0,
        gt=0,
        description="seconds a partition may deliver nothing while it has lag before its receiver is recycled",
    )
    start_position: Annotated[StartPosition, NoDecode] = Field(
        EARLIEST,
        description="where a partition without a checkpoint starts: earliest (nothing is lost), latest, an ISO 8601 "
        "time, or a duration back from now (2h)",
    )

    # --- checkpoints -------------------------------------------------------------------------
    checkpoint_interval: float = Field(10.0, gt=0, description="seconds between a partition's checkpoint writes")
    state_ids: int = Field(
        10_000,
        ge=0,
        description="event ids saved with each checkpoint (the newest), to recognise Event Grid's re-deliveries "
        "after a restart",
    )
    state_subjects: int = Field(
        10_000, ge=0, description="subjects whose last sequencer is saved with each checkpoint (the newest)"
    )
    checkpoint_events: int = Field(
        5000, ge=1, description="events finished after which a partition's checkpoint is written early"
    )
    checkpoint_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds a checkpoint write may take before it counts as failed (the partition goes on, and "
        "writes at its next checkpoint)",
    )

    # --- processing --------------------------------------------------------------------------
    rules: _PathList = Field((), description="rules files or directories, comma-separated (the flag is repeatable)")
    rules_watch: float = Field(
        10.0,
        ge=0,
        description="seconds between checks of the rules files for changes, reloaded when changed (0: only on SIGHUP)",
    )
    reorder_window: float = Field(5.0, ge=0, description="seconds an event waits for earlier events of its subject")
    late_policy: LatePolicy = Field(LatePolicy.SKIP, description="late events: skip (counted) or process (marked)")
    max_event_age: timedelta | None = Field(
        None,
        description="rules without a max_age of their own do not act on an event older than this (2h, 7d): counted "
        "as stale; the age runs from the event's time to now",
    )
    dry_run: bool = Field(
        False,
        description="a shadow run: consume, order and evaluate as the live worker, execute no action (each is "
        "counted as planned); needs a consumer group of its own",
    )
    sequencers: _Sequencers = Field(
        (),
        description="TYPE=KEY pairs ordering TYPE by the string at KEY (e.g. "
        "Microsoft.Storage.BlobCreated=data.sequencer), comma-separated",
    )
    pipeline_process: bool = Field(
        True,
        description="run the pipelines and actions in a child process, so that receiving and processing each "
        "have a core; off: one process (a container limited to one CPU)",
    )
    max_pending: int = Field(
        10_000,
        ge=0,
        description="expectations and groups (rules with expect or group) pending per partition; past it new ones "
        "are forgotten, counted and logged",
    )
    group_events: int = Field(
        100,
        ge=1,
        description="events a group notification lists (events in its template context); the rest are counted",
    )
    concurrency: int = Field(16, ge=1, description="actions running at once per partition")
    max_open: int = Field(
        20_000, ge=1, description="events read ahead of a partition's checkpoint before reading waits"
    )
    shutdown_grace: float = Field(30.0, ge=0, description="seconds in-flight actions get to finish on shutdown")
    idle_exit: float = Field(
        0.0,
        ge=0,
        description="stop once every partition is owned here and caught up (its lag, read from the hub then, is "
        "zero), nothing in flight, and no event arrived for this many seconds (0: never); for a worker alone on its "
        "consumer group: demos, catching up",
    )
    dead_letters: str = Field(
        "dead-letters",
        min_length=1,
        description="the dead-letter lane: a directory, or a blob container URL "
        "(https://ACCOUNT.blob.core.windows.net/CONTAINER[/prefix]) reached with the storage connection string or "
        "DefaultAzureCredential",
    )

    # --- Azure -------------------------------------------------------------------------------
    azure_cloud: _AzureCloud = "AzureCloud"
    azure_resource_manager: _ResourceManager = None
    azureml_api_version: _AzureMLApiVersion = "2025-12-01"

    # --- operations --------------------------------------------------------------------------
    http_host: str = Field(
        "0.0.0.0",  # noqa: S104 - a container's probes and scrapers reach it from outside
        description="address of the health and metrics server",
    )
    http_port: int = Field(8080, ge=0, le=65535, description="port of /healthz, /readyz and /metrics; 0 turns it off")
    log_level: LogLevel = Field("info", description="least level logged")
    log_format: LogFormat = Field("auto", description="json lines, console rendering, or auto (console on a terminal)")
    library_log_level: LogLevel = Field(
        "warning",
        description="least level logged of the libraries' own records (the Azure SDK and its AMQP stack, aiohttp, "
        "asyncio): info or debug to follow the SDK's connections",
    )

    @field_validator("rules", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        return _split(value)

    @field_validator("azure_resource_manager")
    @classmethod
    def _secure(cls, value: str | None) -> str | None:
        return _secure_url(value)

    @field_validator("start_position", mode="before")
    @classmethod
    def _parse_start(cls, value: object) -> object:
        return parse_start(value) if isinstance(value, str) else value

    @field_validator("max_event_age", mode="before")
    @classmethod
    def _parse_age(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("sequencers", mode="before")
    @classmethod
    def _split_sequencers(cls, value: object) -> object:
        pairs = []
        for item in _split(value):
            if isinstance(item, Sequence) and not isinstance(item, str):
                pairs.append(tuple(item))
                continue
            event_type, sep, key = str(item).partition("=")
            if not sep or not event_type or split_key(key) is None:
                raise ValueError(f"{item!r} is not TYPE=KEY, such as Microsoft.Storage.BlobCreated=data.sequencer")
            pairs.append((event_type, key))
        return tuple(pairs)

    def _problems(self) -> list[str]:
        rules = [] if self.rules else [f"{_name('rules')} is required: the rules files to load"]
        return [*self._source_problems(), *rules, *self._claim_problems()]

    @classmethod
    def explicit(cls, **values: Any) -> RunSettings:
        """Settings from ``values`` and the defaults only, whatever the environment holds (the demo)."""
        return _Explicit(**values)

    # --- the parts each component takes ------------------------------------------------------

    def hub(self) -> HubSettings:
        secret = self.eventhub_connection_string
        return HubSettings(
            connection_string=secret.get_secret_value() if secret is not None else None,
            namespace=self.eventhub_namespace,
            eventhub=self.eventhub,
            consumer_group=self.consumer_group,
            prefetch=self.prefetch,
            batch_size=self.batch_size,
            max_wait=self.max_wait,
            strategy=self.load_balancing_strategy,
            interval=self.load_balancing_interval,
            expiry=self.expiry,
            stall_timeout=self.stall_timeout,
            start=self.start_position,
            settle=SETTLE_INTERVALS * self.load_balancing_interval if self.claim_settle is None else self.claim_settle,
        )

    def checkpoints(self) -> CheckpointSettings:
        return replace(
            super().checkpoints(),
            interval=self.checkpoint_interval,
            events=self.checkpoint_events,
            state_ids=self.state_ids,
            state_subjects=self.state_subjects,
            timeout=self.checkpoint_timeout,
        )

    def core(self) -> CoreSettings:
        age = self.max_event_age
        return CoreSettings(
            window=self.reorder_window,
            late=self.late_policy,
            sequencers=self.sequencers,
            max_age=age.total_seconds() if age is not None else None,
            clock="wall",
            max_pending=self.max_pending,
            max_group_events=self.group_events,
        )

    def driver(self) -> DriverSettings:
        return DriverSettings(concurrency=self.concurrency, max_open=self.max_open)

    def processing(self) -> ProcessingSettings:
        return ProcessingSettings(
            rules=self.rules,
            scope=self.scope(),
            checkpoints=self.checkpoints(),
            core=self.core(),
            driver=self.driver(),
            dead_letters=self.dead_letters,
            dry_run=self.dry_run,
            log_level=self.log_level,
            log_format=self.log_format,
            library_log_level=self.library_log_level,
            azure=self.azure(),
        )

    def ops(self) -> OpsSettings:
        return OpsSettings(host=self.http_host, port=self.http_port)

    def azure(self) -> AzureSettings:
        return AzureSettings(self.azure_cloud, self.azure_resource_manager, self.azureml_api_version)


class AzureTargets(BaseSettings):
    """The Azure settings alone, from the environment (``replay`` runs actions as ``worker run`` does)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    azure_cloud: _AzureCloud = "AzureCloud"
    azure_resource_manager: _ResourceManager = None
    azureml_api_version: _AzureMLApiVersion = "2025-12-01"

    @field_validator("azure_resource_manager")
    @classmethod
    def _secure(cls, value: str | None) -> str | None:
        return _secure_url(value)

    def azure(self) -> AzureSettings:
        return AzureSettings(self.azure_cloud, self.azure_resource_manager, self.azureml_api_version)


def _secure_url(value: str | None) -> str | None:
    problem = None if value is None else insecure_url(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def load_azure_settings() -> AzureSettings:
    """The Azure settings from the environment (``WORKER_AZURE_CLOUD``...), for commands other than ``run``."""
    try:
        return AzureTargets().azure()
    except ValidationError as exc:
        raise SettingsError(_problems(exc, [], AzureTargets)) from None


class _Explicit(RunSettings):
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _name(field: str) -> str:
    return f"{env_name(field)} (--{field.replace('_', '-')})"


def _split(value: object) -> tuple[object, ...]:
    """Comma-separated text (a variable, or each use of a repeatable flag) into its items."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    out: list[object] = []
    for item in items:
        if isinstance(item, str):
            out.extend(part.strip() for part in item.split(",") if part.strip())
        else:
            out.append(item)
    return tuple(out)


def _entity_path(connection_string: str) -> str | None:
    """The connection string's EntityPath, read by the SDK's own parser (ValueError when malformed)."""
    from azure.eventhub import parse_connection_string  # noqa: PLC0415 - the SDK only for `run`

    name: str | None = parse_connection_string(connection_string).eventhub_name
    return name


# --- the command line ----------------------------------------------------------------------------

_REPEATABLE = {"rules", "sequencers"}


def add_flags(parser: argparse.ArgumentParser, kind: type[ConnectionSettings] | None = None) -> None:
    """One flag per setting of ``kind`` (default: RunSettings); unset flags fall back to the environment,
    then to the default."""
    for field, info in (kind or RunSettings).model_fields.items():
        default = "required" if info.is_required() else shown_default(info.default)
        help_text = f"{info.description} [{env_name(field)}; default: {default}]"
        if field in _REPEATABLE:
            parser.add_argument(flag_name(field), dest=field, action="append", metavar="VALUE", help=help_text)
        elif info.default is False:  # a switch: the flag alone turns it on
            parser.add_argument(flag_name(field), dest=field, action="store_const", const=True, help=help_text)
        else:
            parser.add_argument(flag_name(field), dest=field, metavar="VALUE", help=help_text)


def shown_default(default: Any) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return ",".join(map(str, default)) or "none"
    if isinstance(default, timedelta):
        return format_duration(default)
    return str(default)


def load_settings(flags: Mapping[str, Any] | None = None) -> RunSettings:
    """The settings from ``flags`` (unset ones are None) over the environment, over the defaults."""
    return _load(RunSettings, flags)


def load_connection_settings(flags: Mapping[str, Any] | None = None) -> ConnectionSettings:
    """Where the consumer group is, as :func:`load_settings` reads it; the variables of ``run`` alone
    are ignored (a pod's environment holds them all), but a variable that is no setting at all is
    still reported."""
    return _load(ConnectionSettings, flags)


_Settings = TypeVar("_Settings", bound=ConnectionSettings)


def _load(kind: type[_Settings], flags: Mapping[str, Any] | None) -> _Settings:
    given = {field: value for field, value in (flags or {}).items() if value is not None}
    unknown = sorted(
        key
        for key in os.environ
        if key.upper().startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() not in RunSettings.model_fields
    )
    try:
        settings = kind(**given)
    except ValidationError as exc:
        raise SettingsError(_problems(exc, unknown, kind)) from None
    if unknown:
        raise SettingsError([f"{key} is not a setting (a typo?)" for key in unknown])
    return settings


_SECRET_FIELDS = {"eventhub_connection_string", "storage_connection_string"}


def _problems(error: ValidationError, unknown: list[str], kind: type[BaseSettings]) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        location = item["loc"]
        message = str(item["msg"]).removeprefix("Value error, ")
        if not location:
            problems.extend(message.split("; "))
            continue
        field = str(location[0])
        if field not in kind.model_fields:
            continue  # reported below as unknown
        shown = "" if field in _SECRET_FIELDS else f", got {item['input']!r}"
        problems.append(f"{_name(field)}: {message}{shown}")
    problems += [f"{key} is not a setting (a typo?)" for key in unknown]
    return problems
