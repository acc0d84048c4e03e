"""The :class:`~worker.telemetry.spans.Tracer` of OpenTelemetry: the only module that imports it.

Loaded only when tracing is on (:func:`~worker.telemetry.start.start_tracing`). The exporters read their own
standard variables (``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``); the sampler is the SDK's, from
``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``; the resource takes ``OTEL_SERVICE_NAME``
and ``OTEL_RESOURCE_ATTRIBUTES``, with ``service.name`` ``azml-worker`` when neither names one.
The event spans follow OpenTelemetry's messaging conventions; an event's own ids are CloudEvents'
attributes (``cloudevents.event_id`` and so on), whatever its schema.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from worker.events import Event
from worker.masking import MASKER
from worker.settings import Scope
from worker.telemetry.context import TraceContext, from_event, from_properties
from worker.telemetry.setup import Exporter, TracingSettings
from worker.telemetry.spans import Attribute

_NAME = "azml-worker"


def _version() -> str:
    try:
        return version("azureml-events-worker")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
        return "0"


class OtelSpan:
    """A :class:`~worker.telemetry.spans.Span` of OpenTelemetry's."""

    __slots__ = ("inner",)

    def __init__(self, inner: trace.Span) -> None:
        self.inner = inner

    def set(self, key: str, value: Attribute) -> None:
        self.inner.set_attribute(key, value)

    def failed(self, reason: str, kind: str | None = None) -> None:
        if kind is not None:
            self.inner.set_attribute("error.type", kind)
        self.inner.set_status(Status(StatusCode.ERROR, MASKER.mask(reason)))

    def end(self) -> None:
        self.inner.end()


class OtelTracer:
    """Spans of a consumer of ``scope`` (None: unknown, in a replay)."""

    def __init__(self, provider: TracerProvider, scope: Scope | None) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer(_NAME, _version())
        common: dict[str, Attribute] = {
            "messaging.system": "eventhubs",
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
        }
        if scope is not None:
            common.update(
                {
                    "messaging.destination.name": scope.eventhub,
                    "messaging.consumer.group.name": scope.consumer_group,
                    "server.address": scope.namespace,
                }
            )
        self._common = common
        self._process = f"process {scope.eventhub}" if scope is not None else "process"

    def event(self, event: Event, *, rules: Sequence[str], late: bool, memo: str | None) -> OtelSpan:
        if memo is not None:
            name = f"{'expire' if memo == 'expiry' else 'notify'} {rules[0] if rules else ''}".rstrip()
            kind = SpanKind.INTERNAL
        else:
            name, kind = self._process, SpanKind.CONSUMER
        links = [_link(found) for found in _producers(event)]
        # A trace of its own, whatever is current where it starts: the producer's comes as a link.
        span = self._tracer.start_span(name, Context(), kind, None, links)
        if span.is_recording():  # a span sampled out costs no attributes
            span.set_attributes(self._attributes(event, rules, late, memo))
        return OtelSpan(span)

    def _attributes(self, event: Event, rules: Sequence[str], late: bool, memo: str | None) -> dict[str, Attribute]:
        position = event.position
        attributes = dict(self._common)
        attributes.update(
            {
                "messaging.message.id": event.id,
                "messaging.destination.partition.id": position.partition_id,
                "cloudevents.event_id": event.id,
                "cloudevents.event_type": event.type,
                "azml_worker.rules": tuple(rules),
                "azml_worker.late": late,
            }
        )
        if event.subject is not None:
            attributes["cloudevents.event_subject"] = event.subject
        if event.topic is not None:
            attributes["cloudevents.event_source"] = event.topic
        if position.sequence_number is not None:
            attributes["azml_worker.sequence_number"] = position.sequence_number
        if position.enqueued_time is not None:
            attributes["messaging.eventhubs.message.enqueued_time"] = int(position.enqueued_time.timestamp())
        if memo is not None:
            attributes["azml_worker.memo"] = memo
        return attributes

    def current(self, span: object) -> AbstractContextManager[object]:
        if not isinstance(span, OtelSpan):
            raise TypeError(f"not a span of this tracer: {span!r}")
        return trace.use_span(span.inner, end_on_exit=False, record_exception=False, set_status_on_exception=False)

    @contextmanager
    def attempt(self, action_type: str, *, rule: str, index: int, target: str, number: int) -> Iterator[OtelSpan]:
        attributes: dict[str, Attribute] = {
            "azml_worker.rule": rule,
            "azml_worker.action.type": action_type,
            "azml_worker.action.index": index,
            "azml_worker.target": target,
            "azml_worker.attempt": number,
        }
        with self._tracer.start_as_current_span(
            f"attempt {action_type}", kind=SpanKind.INTERNAL, attributes=attributes, set_status_on_exception=False
        ) as span:
            yield OtelSpan(span)

    @contextmanager
    def request(self, method: str, url: str, headers: MutableMapping[str, str]) -> Iterator[OtelSpan]:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
        where = f"[{host}]" if ":" in host else host
        # Without credentials or query (where signatures go), and masked as the logs are: a URL that
        # is a secret (a Slack webhook's) is not sent to the tracing backend.
        shown = f"{parts.scheme}://{where}{'' if port is None else f':{port}'}{parts.path}"
        attributes: dict[str, Attribute] = {
            "http.request.method": method,
            "url.full": MASKER.mask(shown),
            "server.address": host,
        }
        if port is not None:
            attributes["server.port"] = port
        with self._tracer.start_as_current_span(
            method, kind=SpanKind.CLIENT, attributes=attributes, set_status_on_exception=False
        ) as span:
            propagate.inject(headers)
            yield OtelSpan(span)

    @contextmanager
    def checkpoint(self, partition_id: str, sequence_number: int | None) -> Iterator[OtelSpan]:
        attributes: dict[str, Attribute] = {"messaging.destination.partition.id": partition_id}
        if sequence_number is not None:
            attributes["azml_worker.sequence_number"] = sequence_number
        with self._tracer.start_as_current_span(
            f"checkpoint {partition_id}", kind=SpanKind.INTERNAL, attributes=attributes
        ) as span:
            yield OtelSpan(span)

    def close(self) -> None:
        self.provider.shutdown()


def _producers(event: Event) -> list[TraceContext]:
    """The producer contexts the event carries: its message's, and its own when it is another."""
    found = [c for c in (from_properties(event.message.properties), from_event(event.envelope)) if c is not None]
    if len(found) == 2 and found[0].span_id == found[1].span_id:
        del found[1]
    return found


def _link(found: TraceContext) -> Link:
    flags = TraceFlags(TraceFlags.SAMPLED if found.sampled else TraceFlags.DEFAULT)
    state = TraceState.from_header([found.state]) if found.state else None
    return Link(SpanContext(found.trace_id, found.span_id, is_remote=True, trace_flags=flags, trace_state=state))


def _exporter(kind: Exporter, environ: Mapping[str, str], provider: TracerProvider) -> SpanExporter:
    if kind is Exporter.OTLP:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        return OTLPSpanExporter()
    if kind is Exporter.CONSOLE:
        return ConsoleSpanExporter(out=sys.stderr)  # stdout carries the logs
    from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter  # noqa: PLC0415

    # Given its provider: it would otherwise look for the global one, which may not be set yet.
    return AzureMonitorTraceExporter(
        connection_string=environ["APPLICATIONINSIGHTS_CONNECTION_STRING"], tracer_provider=provider
    )


def start(settings: TracingSettings, environ: Mapping[str, str], scope: Scope | None, *, role: str) -> OtelTracer:
    """The tracer of this process, its provider made global, and the Azure SDKs' spans under it
    (azure-core's OpenTelemetry plugin)."""
    from azure.core.settings import settings as azure_settings  # noqa: PLC0415

    made = provider(settings, environ, role=role)
    trace.set_tracer_provider(made)
    azure_settings.tracing_implementation = "opentelemetry"
    return OtelTracer(made, scope)


def provider(settings: TracingSettings, environ: Mapping[str, str], *, role: str) -> TracerProvider:
    """A tracer provider sending to the exporters ``settings`` name, in batches."""
    resource = Resource.create({"service.version": _version(), "azml_worker.process": role})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": _NAME}))
    made = TracerProvider(resource=resource, shutdown_on_exit=False)
    for kind in sorted(settings.exporters):
        processor: SpanProcessor = BatchSpanProcessor(_exporter(kind, environ, made))
        made.add_span_processor(processor)
    return made
