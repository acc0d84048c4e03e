"""Traces on and off from the standard variables, and nothing of OpenTelemetry imported when off."""

from __future__ import annotations

import subprocess
import sys

import pytest

from worker.errors import SettingsError
from worker.telemetry.setup import Exporter, tracing_settings
from worker.telemetry.start import start_tracing


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, set()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, {Exporter.OTLP}),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, {Exporter.OTLP}),
        ({"OTEL_TRACES_EXPORTER": "console"}, {Exporter.CONSOLE}),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=k"}, {Exporter.AZURE_MONITOR}),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=k"},
            {Exporter.OTLP, Exporter.AZURE_MONITOR},
        ),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, set()),
        ({"OTEL_SDK_DISABLED": "true", "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=k"}, set()),
    ],
)
def test_the_standard_variables_turn_traces_on_and_off(environ: dict[str, str], expected: set[Exporter]) -> None:
    assert tracing_settings(environ).exporters == expected


def test_an_exporter_not_supported_is_named() -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER: 'zipkin'"):
        tracing_settings({"OTEL_TRACES_EXPORTER": "otlp,zipkin"})


def test_otlp_over_grpc_is_refused_by_name() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' is not spoken here"):
        tracing_settings(environ)
    assert tracing_settings(environ | {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}).exporters == {Exporter.OTLP}


@pytest.mark.integration
def test_with_tracing_off_the_worker_imports_nothing_of_opentelemetry() -> None:
    """Not at start, and not when the worker asks for its tracer with no variable set."""
    probe = (
        "import sys, worker.cli, worker.live.run, worker.live.child, worker.replay.pool; "
        "from worker.telemetry.start import start_tracing; "
        "from worker.telemetry.spans import NO_TRACER; "
        "assert start_tracing({}, None, role='worker') is NO_TRACER; "
        "print(sorted(m for m in sys.modules if 'opentelemetry' in m or m.startswith('azure.monitor')))"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert found.stdout.strip() == "[]"


def test_an_exporter_the_variables_do_not_name_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="OTEL_TRACES_EXPORTER: 'jaeger' is not an exporter here"):
        start_tracing({"OTEL_TRACES_EXPORTER": "jaeger"}, None, role="worker")
