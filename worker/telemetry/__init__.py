"""Traces (optional): the spans the worker makes, and what an event carries of its producer's trace.

:mod:`~worker.telemetry.spans` is the one interface the driver, the action runner, the HTTP client
and the live partitions speak, with a tracer that makes nothing; :mod:`~worker.telemetry.setup`
reads the standard variables (``OTEL_*``, ``APPLICATIONINSIGHTS_CONNECTION_STRING``) and
:mod:`~worker.telemetry.start` makes a process's tracer from them; :mod:`~worker.telemetry.otel`,
OpenTelemetry's tracer, is loaded only then. :mod:`~worker.telemetry.context` reads a producer's
context from a message's properties or a CloudEvent's attributes, purely.

May use: the records every room speaks (events, settings, errors), and OpenTelemetry, the Azure
Monitor exporter and azure-core's tracing plugin (in ``otel`` alone, the ``tracing`` extra). Never
the core, the actions, the live worker or replay: they use it.
"""
