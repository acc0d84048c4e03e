"""This process's tracer, made from the standard variables: :func:`start_tracing`."""

from __future__ import annotations

from collections.abc import Mapping

from worker.errors import SettingsError
from worker.settings import Scope
from worker.telemetry.setup import tracing_settings
from worker.telemetry.spans import NO_TRACER, Tracer


def start_tracing(environ: Mapping[str, str], scope: Scope | None, *, role: str) -> Tracer:
    """This process's tracer: :data:`~worker.telemetry.spans.NO_TRACER` when the environment asks for
    no traces (and then nothing of OpenTelemetry is imported). Raises SettingsError when it asks for
    an exporter that is not there, or one that is not installed (the ``tracing`` extra)."""
    try:
        settings = tracing_settings(environ)
    except ValueError as exc:
        raise SettingsError([str(exc)]) from exc
    if not settings.on:
        return NO_TRACER
    try:
        from worker.telemetry import otel  # noqa: PLC0415 - only with tracing on
    except ImportError as exc:
        raise SettingsError(
            [
                f"traces are asked for ({', '.join(sorted(settings.exporters))}), but {exc.name} is not installed: "
                "install the worker with its tracing extra (azureml-events-worker[tracing])"
            ]
        ) from exc
    return otel.start(settings, environ, scope, role=role)
