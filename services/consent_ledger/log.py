"""structlog, configured once per process at its entry point: JSON lines when
stderr is not a terminal, readable colours when it is."""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Callable
from typing import Any

import orjson
import structlog


def configure_logging(level: str = "info") -> None:
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    factory: Callable[..., Any]
    if sys.stderr.isatty():
        processors.append(structlog.dev.ConsoleRenderer())
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    else:
        # orjson renders a line in a fraction of json.dumps' time: a busy worker
        # logs a line per violation, hundreds a second.
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        factory = structlog.BytesLoggerFactory(file=sys.stderr.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    config = stdlib_logging_config()
    if config is not None:
        logging.config.dictConfig(config)


def stdlib_logging_config(level: str = "warning") -> dict[str, Any] | None:
    """A ``logging.config.dictConfig`` that writes what the libraries log through
    the standard library (aiokafka, faust, uvicorn) as JSON lines like the
    project's own, when stderr is not a terminal; None on a terminal, where
    their plain lines read well enough. The worker hands it to faust, which
    would otherwise install its own plain handler."""
    if sys.stderr.isatty():
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer(),
                ],
                "foreign_pre_chain": [
                    structlog.stdlib.add_log_level,
                    structlog.stdlib.add_logger_name,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info,
                ],
            }
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": sys.stderr}
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }
