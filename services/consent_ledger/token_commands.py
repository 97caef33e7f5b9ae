"""``consent-ledger token create|list|revoke`` (CONTRACT §7), straight on the database.

The command needs ``LEDGER_DATABASE_URL``, not a running API: that is how the
first admin token comes to be. ``create`` prints the token once, as its last
line; only its hash is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from consent_ledger.core.roles import Role
from consent_ledger.core.timestamps import format_micros, to_micros

if TYPE_CHECKING:  # the database's modules load only when a token command runs
    from consent_ledger.store.tokens import TokenRecord, TokenStore

T = TypeVar("T")


class TokenCommandError(Exception):
    """Printed as one line; exit status 2."""


def add_token_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser(
        "token",
        help="issue, list and revoke the API's bearer tokens (needs LEDGER_DATABASE_URL)",
    )
    actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="issue a token; prints it once, as the last line")
    create.add_argument("--name", required=True, help="who holds it, e.g. crm-publisher")
    create.add_argument(
        "--role",
        action="append",
        required=True,
        metavar="ROLE",
        help=f"repeatable or comma-separated: {', '.join(role.value for role in Role)}",
    )
    create.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="URN",
        help="a source value a publisher may publish (repeatable)",
    )
    create.add_argument("--expires-in", type=int, metavar="DAYS", help="default: never")
    listing = actions.add_parser("list", help="name, roles, sources, created, expires, last used")
    listing.add_argument("--revoked", action="store_true", help="also list revoked tokens")
    revoke = actions.add_parser("revoke", help="end a token at once")
    revoke.add_argument("name")


def run_token_command(args: argparse.Namespace, database_url: str | None) -> int:
    if not database_url:
        raise TokenCommandError("set LEDGER_DATABASE_URL")
    if args.action == "create":
        roles = [part.strip() for value in args.role for part in value.split(",") if part.strip()]
        if args.expires_in is not None and args.expires_in < 1:
            raise TokenCommandError("--expires-in takes a number of days, at least 1")
        expires_at = (
            datetime.now(UTC) + timedelta(days=args.expires_in) if args.expires_in else None
        )
        token, record = _on_database(
            database_url,
            lambda store: store.issue(args.name, roles, sources=args.source, expires_at=expires_at),
        )
        sys.stdout.write(
            f"issued token {record.name!r}: roles {', '.join(record.roles)}"
            + (f"; sources {', '.join(record.sources)}" if record.sources else "")
            + f"; expires {_when(record.expires_at) or 'never'}\n"
            "the token is shown only now; keep it secret:\n"
        )
        sys.stdout.write(token + "\n")
        return 0
    if args.action == "list":
        records = _on_database(
            database_url, lambda store: store.tokens(include_revoked=args.revoked)
        )
        _print_table(records, revoked=args.revoked)
        return 0
    if not _on_database(database_url, lambda store: store.revoke(args.name)):
        raise TokenCommandError(f"no live token named {args.name!r}")
    sys.stdout.write(f"revoked token {args.name!r}\n")
    return 0


def _on_database(database_url: str, action: Callable[[TokenStore], Awaitable[T]]) -> T:
    import asyncpg

    from consent_ledger.store.migrate import migrate
    from consent_ledger.store.tokens import TokenError, TokenStore

    async def run() -> T:
        connection = await asyncpg.connect(database_url)
        try:
            await migrate(connection)
            return await action(TokenStore(connection))
        finally:
            await connection.close()

    try:
        return asyncio.run(run())
    except TokenError as exc:
        raise TokenCommandError(str(exc)) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise TokenCommandError(f"cannot reach the database: {type(exc).__name__}: {exc}") from None


def _when(moment: datetime | None) -> str:
    return format_micros(to_micros(moment)) if moment is not None else ""


def _print_table(records: list[TokenRecord], *, revoked: bool) -> None:
    header = ["NAME", "ROLES", "SOURCES", "CREATED", "EXPIRES", "LAST USED"]
    if revoked:
        header.append("REVOKED")
    rows = [header]
    for record in records:
        row = [
            record.name,
            ",".join(record.roles),
            ",".join(record.sources) or "-",
            _when(record.created_at),
            _when(record.expires_at) or "never",
            _when(record.last_used_at) or "never",
        ]
        if revoked:
            row.append(_when(record.revoked_at) or "-")
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        sys.stdout.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            + "\n"
        )
