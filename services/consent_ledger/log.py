"""structlog, configured once per process at its entry point: JSON lines when
stderr is not a terminal, readable colours when it is."""

from __future__ import annotations

import logging
import logging.config
import re
import sys
from collections.abc import Callable
from typing import Any

import orjson
import structlog

# A quoted literal in an error message: Python's repr of a str or bytes value
# (asyncpg's DataError quotes the query argument it could not encode), or a
# double-quoted name; a quote after a letter is an apostrophe ("can't").
_QUOTED = re.compile(r"(?<!\w)b?'(?:[^'\\\n]|\\.)*'|(?<!\w)b?\"(?:[^\"\\\n]|\\.)*\"")


def redact_values(text: str) -> str:
    """``text`` with every quoted literal replaced by its length: error messages
    about a record (a driver quoting the value it refused) may quote a subject id,
    and logs outlive erasure."""
    return _QUOTED.sub(lambda quoted: f"<{len(quoted.group())} characters redacted>", text)


def redact_exception(
    logger: Any, method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Redact the message lines of a rendered traceback (the lines that do not
    start with white space: source lines are the code's, not the data's)."""
    rendered = event.get("exception")
    if isinstance(rendered, str):
        event["exception"] = "\n".join(
            line if line[:1].isspace() or line.startswith("Traceback") else redact_values(line)
            for line in rendered.split("\n")
        )
    return event


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
            redact_exception,
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
                    redact_exception,
                ],
            }
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": sys.stderr}
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }
