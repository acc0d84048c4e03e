"""Logging set-up: structlog, JSON lines when not on a terminal, console rendering on one, secrets masked.

Every line is masked as rendered (:data:`~worker.masking.MASKER`), whatever it holds: a value, an
error message, a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

from worker.masking import MASKER, MaskedText


def configure(level: str = "info", log_format: Literal["auto", "json", "console"] = "auto") -> None:
    """Configure structlog once, at start-up. ``auto`` picks JSON unless stderr is a terminal."""
    as_json = not sys.stderr.isatty() if log_format == "auto" else log_format == "json"
    render: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )

    def renderer(logger: WrappedLogger, name: str, event: EventDict) -> str:
        return MASKER.mask(str(render(logger, name, event)))

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # Lines are masked as rendered: not again by a masking stderr (the command line's).
        logger_factory=structlog.PrintLoggerFactory(
            sys.stderr.stream if isinstance(sys.stderr, MaskedText) else sys.stderr
        ),
        # Not cached: loggers follow a later configure() (tests, and a reconfigured worker).
        cache_logger_on_first_use=False,
    )
