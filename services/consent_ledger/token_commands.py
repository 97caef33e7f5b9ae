"""``consent-ledger token create|list|revoke`` (CONTRACT §7).

With ``LEDGER_DATABASE_URL`` the command works on the database itself, no API
needed: that is how the first admin token comes to be. Without it, it asks a
running API's ``/v1/tokens`` as the admin whose token is in ``LEDGER_TOKEN``.
``create`` prints the token once, as its last line; only its hash is stored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from consent_ledger.api_client import ApiCallFailed, call_api
from consent_ledger.core.roles import Role
from consent_ledger.core.timestamps import format_micros, to_micros
from consent_ledger.settings import Settings

if TYPE_CHECKING:  # the database's modules load only when a token command runs
    from consent_ledger.store.tokens import TokenRecord, TokenStore

T = TypeVar("T")


class TokenCommandError(Exception):
    """Printed as one line; exit status 2."""


def add_token_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser(
        "token",
        help="issue, list and revoke the API's bearer tokens (on LEDGER_DATABASE_URL, "
        "else through the API with an admin's LEDGER_TOKEN)",
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
        action="extend",
        nargs="+",
        default=[],
        metavar="URN",
        help="the source values a publisher may publish (--source A B, or --source repeated)",
    )
    create.add_argument("--expires-in", type=int, metavar="DAYS", help="default: never")
    listing = actions.add_parser("list", help="name, roles, sources, created, expires, last used")
    listing.add_argument("--revoked", action="store_true", help="also list revoked tokens")
    revoke = actions.add_parser("revoke", help="end a token at once")
    revoke.add_argument("name")


def run_token_command(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.database_url and not settings.token:
        raise TokenCommandError(
            "set LEDGER_DATABASE_URL, or LEDGER_TOKEN (an admin's) to go through the API"
        )
    try:
        if args.action == "create":
            return _create(args, settings)
        if args.action == "list":
            if settings.database_url:
                records = _on_database(
                    settings.database_url,
                    lambda store: store.tokens(include_revoked=args.revoked),
                )
                rows = [_record_row(record) for record in records]
            else:
                path = "/v1/tokens" + ("?revoked=true" if args.revoked else "")
                rows = [_api_row(item) for item in call_api(settings, "GET", path)["items"]]
            _print_table(rows, revoked=args.revoked)
            return 0
        if settings.database_url:
            if not _on_database(settings.database_url, lambda store: store.revoke(args.name)):
                raise TokenCommandError(f"no live token named {args.name!r}")
        else:
            call_api(settings, "DELETE", f"/v1/tokens/{quote(args.name, safe='')}")
    except ApiCallFailed as exc:
        raise TokenCommandError(str(exc)) from None
    sys.stdout.write(f"revoked token {args.name!r}\n")
    return 0


def _create(args: argparse.Namespace, settings: Settings) -> int:
    roles = [part.strip() for value in args.role for part in value.split(",") if part.strip()]
    if args.expires_in is not None and args.expires_in < 1:
        raise TokenCommandError("--expires-in takes a number of days, at least 1")
    if settings.database_url:
        expires_at = (
            datetime.now(UTC) + timedelta(days=args.expires_in) if args.expires_in else None
        )
        token, record = _on_database(
            settings.database_url,
            lambda store: store.issue(args.name, roles, sources=args.source, expires_at=expires_at),
        )
        row = _record_row(record)
    else:
        body = {
            "name": args.name,
            "roles": roles,
            "sources": args.source,
            "expires_in_days": args.expires_in,
        }
        issued = call_api(settings, "POST", "/v1/tokens", body)
        token, row = issued["token"], _api_row(issued)
    name, roles_text, sources, _, expires = row[:5]
    sys.stdout.write(
        f"issued token {name!r}: roles {roles_text.replace(',', ', ')}"
        + (f"; sources {sources.replace(',', ', ')}" if sources != "-" else "")
        + f"; expires {expires}\n"
        "the token is shown only now; keep it secret:\n"
    )
    sys.stdout.write(token + "\n")
    return 0


def _on_database(database_url: str, action: Callable[[TokenStore], Awaitable[T]]) -> T:
    import asyncio  # here, not at the top: every command's parser imports this module

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


def _record_row(record: TokenRecord) -> list[str]:
    return [
        record.name,
        ",".join(record.roles),
        ",".join(record.sources) or "-",
        _when(record.created_at),
        _when(record.expires_at) or "never",
        _when(record.last_used_at) or "never",
        _when(record.revoked_at) or "-",
    ]


def _api_row(item: dict[str, Any]) -> list[str]:
    """A row from an item of GET /v1/tokens, as :func:`_record_row` makes one."""
    return [
        item["name"],
        ",".join(item["roles"]),
        ",".join(item["sources"]) or "-",
        item["created_at"],
        item["expires_at"] or "never",
        item["last_used_at"] or "never",
        item["revoked_at"] or "-",
    ]


def _print_table(records: list[list[str]], *, revoked: bool) -> None:
    header = ["NAME", "ROLES", "SOURCES", "CREATED", "EXPIRES", "LAST USED", "REVOKED"]
    width = len(header) if revoked else len(header) - 1
    rows = [header[:width]] + [record[:width] for record in records]
    widths = [max(len(row[column]) for row in rows) for column in range(width)]
    for row in rows:
        sys.stdout.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            + "\n"
        )
