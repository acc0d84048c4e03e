"""Logging set-up: one stream of structlog lines, JSON when not on a terminal, secrets masked.

The worker's own events (``structlog.get_logger("worker.run")``) and the records of the standard
``logging`` module (the Azure SDK and its AMQP stack, aiohttp, asyncio; Python's warnings too) go
through the same processors to the same stream: in JSON, one object a line with ``level``,
``logger``, ``event`` and ``timestamp``, an exception inside it as ``exception``. Every line is
masked as rendered (:data:`~worker.masking.MASKER`), whatever it holds: a value, an error message, a
traceback. The libraries log at ``library_level`` and above (default: warning), the worker at
``level`` and above.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from worker.masking import MASKER, MaskedText

log = structlog.get_logger("worker.log")

#: The name of the handler :func:`configure` puts on the root logger (a later configure replaces it).
HANDLER_NAME = "worker.log"


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's write logger, knowing the name it was asked for (``get_logger("worker.run")``).

    It writes each line and its newline in one call: the worker's two processes share one stream,
    and a line written in two parts could be joined to the other process's."""

    def __init__(self, file: TextIO | None = None, name: str = "worker") -> None:
        super().__init__(file)
        self.name = name


class _NamedWriteLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedWriteLogger:
        return _NamedWriteLogger(self._file, str(args[0]) if args else "worker")


class _Lines(logging.Handler):
    """Hands each formatted record to structlog's print logger: one writer, one lock, per stream."""

    def __init__(self, out: structlog.WriteLogger) -> None:
        super().__init__()
        self._out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._out.msg(self.format(record))
        except Exception:  # logging's own contract: report, never raise
            self.handleError(record)


def configure(
    level: str = "info",
    log_format: Literal["auto", "json", "console"] = "auto",
    library_level: str = "warning",
) -> None:
    """Configure structlog and the standard library's logging, at start-up (again: replaces it).

    ``auto`` picks JSON unless stderr is a terminal.
    """
    as_json = not sys.stderr.isatty() if log_format == "auto" else log_format == "json"
    render: Processor = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()

    def renderer(logger: WrappedLogger, name: str, event: EventDict) -> str:
        return MASKER.mask(str(render(logger, name, event)))

    # Lines are masked as rendered: not again by a masking stderr (the command line's).
    stream = sys.stderr.stream if isinstance(sys.stderr, MaskedText) else sys.stderr
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # JSON holds the traceback as one value; the console renderer lays it out itself.
    tail: list[Processor] = [structlog.processors.format_exc_info, renderer] if as_json else [renderer]
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(_level(level)),
        logger_factory=_NamedWriteLoggerFactory(stream),
        # Not cached: loggers follow a later configure() (tests, and a reconfigured worker).
        cache_logger_on_first_use=False,
    )
    handler = _Lines(structlog.WriteLogger(stream))
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_level(library_level))
    logging.captureWarnings(True)  # Python's warnings too, as records of the py.warnings logger


def log_loop_exception(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An event loop's exception handler (``loop.set_exception_handler``): an exception no one
    retrieved, a callback that raised; logged as ``loop.exception``, with its traceback."""
    details: dict[str, object] = {k: repr(v) for k, v in context.items() if k not in ("message", "exception")}
    exception = context.get("exception")
    if exception is not None:
        details["exc_info"] = exception
    log.error("loop.exception", message=context.get("message"), **details)


def _level(name: str) -> int:
    return logging.getLevelNamesMapping()[name.upper()]
