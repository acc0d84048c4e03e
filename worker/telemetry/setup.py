"""Whether traces are on, from the standard variables; off, nothing of a tracing library is imported.

On when the environment names an exporter: an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), ``OTEL_TRACES_EXPORTER`` (``otlp`` or ``console``), or
``APPLICATIONINSIGHTS_CONNECTION_STRING`` (Azure Monitor). ``OTEL_SDK_DISABLED=true`` and
``OTEL_TRACES_EXPORTER=none`` turn them off whatever else is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Exporter(StrEnum):
    OTLP = "otlp"
    CONSOLE = "console"
    AZURE_MONITOR = "azure_monitor"


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """The exporters traces go to (none: tracing is off)."""

    exporters: frozenset[Exporter]

    @property
    def on(self) -> bool:
        return bool(self.exporters)


def tracing_settings(environ: Mapping[str, str]) -> TracingSettings:
    """What the environment asks for; a value that names no exporter is a ValueError naming it."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TracingSettings(frozenset())
    named = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if "none" in named:
        return TracingSettings(frozenset())
    exporters: set[Exporter] = set()
    for name in named:
        if name not in (Exporter.OTLP, Exporter.CONSOLE):
            raise ValueError(f"OTEL_TRACES_EXPORTER: {name!r} is not an exporter here (otlp, console or none)")
        exporters.add(Exporter(name))
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        exporters.add(Exporter.OTLP)
    if Exporter.OTLP in exporters:
        for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = environ.get(name, "").strip()
            if protocol and protocol != "http/protobuf":
                raise ValueError(f"{name}: {protocol!r} is not spoken here: OTLP goes over http/protobuf (port 4318)")
    if environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        exporters.add(Exporter.AZURE_MONITOR)
    return TracingSettings(frozenset(exporters))
