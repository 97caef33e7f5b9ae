"""What every subcommand shares: its exit statuses, the usage error, its --help
layout, the settings and the logging it starts with, a database connection.

Light on purpose: the package imports it before any command runs, so it
imports nothing heavy at module level (``check`` must start fast).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import orjson

from consent_ledger.settings import Settings, SettingsError

EXIT_OK, EXIT_VIOLATIONS, EXIT_USAGE = 0, 1, 2

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""Where a subcommand is registered: ``add_parser`` of the top-level parser."""

T = TypeVar("T")

TRANSPORT = (
    "LEDGER_KAFKA_SECURITY_PROTOCOL, LEDGER_KAFKA_SASL_MECHANISM, LEDGER_KAFKA_SASL_USERNAME, "
    "LEDGER_KAFKA_SASL_PASSWORD_FILE, LEDGER_KAFKA_CA_FILE (TLS and SASL to Kafka)"
)
"""The transport variables every command that talks to Kafka reads, for its --help."""


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


def _epilog(variables: str, exit_status: str) -> str:
    return "\n".join(
        textwrap.fill(text, 79, subsequent_indent="  ")
        for text in (f"environment: {variables}", exit_status)
    )


def add_command(
    commands: Any, name: str, summary: str, description: str, variables: str, exit_status: str
) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does, what it reads and how it exits."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 79),
        epilog=_epilog(variables, exit_status),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def configure_logging() -> None:
    from consent_ledger.log import configure_logging  # structlog: not needed by check

    configure_logging()


def settings_from_env() -> Settings:
    """The settings, with a configuration error (an unreadable Kafka password or
    CA file too) turned into a usage error: one line, before anything starts."""
    try:
        settings = Settings.from_env()
        if settings.kafka_security_protocol != "PLAINTEXT":
            from consent_ledger.kafka import kafka_security

            kafka_security(settings)  # an unreadable password or CA file: one line, now
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    return settings


def on_database(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``await work(connection)`` on a migrated connection to the ledger's database."""
    import asyncio

    import asyncpg

    from consent_ledger.store.migrate import migrate

    if not settings.database_url:
        raise UsageError("set LEDGER_DATABASE_URL")

    async def run() -> T:
        connection = await asyncpg.connect(settings.database_url)
        try:
            await migrate(connection)
            return await work(connection)
        finally:
            await connection.close()

    try:
        return asyncio.run(run())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise UsageError(f"database error: {type(exc).__name__}: {exc}") from None


def write_json(document: Any) -> None:
    """One indented JSON document on stdout (what --json prints)."""
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    sys.stdout.write("\n")
