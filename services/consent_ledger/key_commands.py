"""``consent-ledger keys rotate-master|rotate-signing|list`` (CONTRACT §7),
straight on the database, while workers and API run.

Master keys: ``LEDGER_MASTER_KEY_FILE`` holds every master key in use, one a
line, the newest last (integrity/keyring.py). A rotation: put a new key at the
end of the file every worker and API reads (``rotate-master --generate`` does it
where the file is writable; a secret store: ``keys new-master`` prints a line to
append), let them take it up (they re-read a changed file), then ``rotate-master``
re-wraps every subject key under it in batches and retires the older keys, which
may then leave the file. Interrupted, it is simply run again.

Signing keys: ``rotate-signing`` writes a new Ed25519 key over
``LEDGER_SIGNING_KEY_FILE`` (or ``--out FILE``, to put in a secret store) and
registers its public half; workers sign with it from their next checkpoint.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from consent_ledger.settings import Settings

if TYPE_CHECKING:  # the database's modules load only when a key command runs
    import asyncpg


class KeyCommandError(Exception):
    """Printed as one line; exit status 2."""


def add_key_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys",
        help="rotate the master key or the signing key while the service runs",
        description="Rotate the master key (re-wrap every subject key under the newest "
        "one in LEDGER_MASTER_KEY_FILE, then retire the older ones) or the signing key "
        "(start a new Ed25519 key; later checkpoints carry its key id). Environment: "
        "LEDGER_DATABASE_URL (required), LEDGER_MASTER_KEY_FILE or LEDGER_MASTER_KEY, "
        "LEDGER_SIGNING_KEY_FILE. Exit status: 0 done, 2 usage, key or database error.",
    )
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    master = actions.add_parser(
        "rotate-master",
        help="re-wrap every subject key under the newest master key; retire the older ones",
    )
    master.add_argument(
        "--generate", action="store_true",
        help="first append a new random key to LEDGER_MASTER_KEY_FILE (it becomes the newest)",
    )  # fmt: skip
    master.add_argument(
        "--batch-size", type=int, default=1_000, help="subject keys per transaction (1000)"
    )
    actions.add_parser("new-master", help="print a new random master key (a line to append)")
    signing = actions.add_parser(
        "rotate-signing", help="start a new Ed25519 signing key and register its public half"
    )
    signing.add_argument(
        "--out", type=Path,
        help="write the new key here instead of over LEDGER_SIGNING_KEY_FILE (for a secret store)",
    )  # fmt: skip
    actions.add_parser("list", help="the master keys and signing keys the ledger knows")


def run_key_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "new-master":
        sys.stdout.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        return 0
    if not settings.database_url:
        raise KeyCommandError("set LEDGER_DATABASE_URL")
    import asyncio  # here, not at the top: every command's parser imports this module

    import asyncpg

    from consent_ledger.integrity.keyring import MasterKeyError

    run = {"rotate-master": _rotate_master, "rotate-signing": _rotate_signing, "list": _list}
    try:
        asyncio.run(run[args.action](args, settings))
    except MasterKeyError as exc:
        raise KeyCommandError(str(exc)) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise KeyCommandError(f"cannot use the database: {type(exc).__name__}: {exc}") from None
    return 0


async def _pool(settings: Settings) -> asyncpg.Pool:
    import asyncpg

    from consent_ledger.store.migrate import migrate

    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    async with pool.acquire() as connection:
        await migrate(connection)
    return pool


async def _rotate_master(args: argparse.Namespace, settings: Settings) -> None:
    from consent_ledger.integrity.keyring import add_master_key, load_keyring
    from consent_ledger.store.key_rotation import MasterRotation, rotate_master_key

    if args.batch_size < 1:
        raise KeyCommandError("--batch-size must be at least 1")
    if args.generate:
        if settings.master_key or settings.master_key_file is None:
            raise KeyCommandError(
                "--generate appends to LEDGER_MASTER_KEY_FILE, and LEDGER_MASTER_KEY is set or "
                "the file is not: add the output of `keys new-master` where your keys are kept"
            )
        added = add_master_key(settings.master_key_file)
        sys.stdout.write(f"added master key {added.hex()} to {settings.master_key_file}\n")
    keyring = load_keyring(settings.master_key_file, settings.master_key)

    def progress(report: MasterRotation) -> None:
        sys.stdout.write(f"re-wrapped {report.rewrapped} subject keys\n")
        sys.stdout.flush()

    pool = await _pool(settings)
    try:
        report = await rotate_master_key(
            pool, keyring, batch_size=args.batch_size, on_batch=progress
        )
    finally:
        await pool.close()
    sys.stdout.write(
        f"every subject key is wrapped by master key {report.newest} "
        f"({report.rewrapped} re-wrapped now)\n"
    )
    if report.retired:
        sys.stdout.write(retired_keys_line(report.retired))


def retired_keys_line(retired: list[str]) -> str:
    """The line telling the operator which master keys may leave the file, in
    the right number: one key is "it", several are "them"."""
    pronoun = "it" if len(retired) == 1 else "them"
    return (
        f"retired {', '.join(retired)}: remove {pronoun} from the master key file once "
        "every worker and API reads the new file\n"
    )


async def _rotate_signing(args: argparse.Namespace, settings: Settings) -> None:
    from consent_ledger.integrity.checkpoints import (
        generate_signing_key,
        key_id,
        public_key_pem,
        save_signing_key,
    )
    from consent_ledger.store.key_rotation import register_signing_key

    target = args.out or settings.signing_key_file
    if target is None:
        raise KeyCommandError("give --out FILE, or set LEDGER_SIGNING_KEY_FILE")
    key = generate_signing_key()
    pool = await _pool(settings)
    try:
        async with pool.acquire() as connection:
            # Registered before any worker can sign with it.
            await register_signing_key(connection, key_id(key), public_key_pem(key))
    finally:
        await pool.close()
    try:
        save_signing_key(key, target, overwrite=args.out is None)
    except OSError as exc:
        raise KeyCommandError(f"cannot write {target}: {exc.strerror or exc}") from None
    sys.stdout.write(
        f"signing key {key_id(key)} written to {target}; workers sign with it from their "
        "next checkpoint once they read it there\n"
    )


async def _list(args: argparse.Namespace, settings: Settings) -> None:
    from consent_ledger.core.timestamps import format_micros, to_micros
    from consent_ledger.store.key_rotation import signing_key_periods

    pool = await _pool(settings)
    try:
        async with pool.acquire() as connection:
            masters = await connection.fetch(
                "SELECT key_id, first_seen, retired_at FROM master_keys ORDER BY first_seen"
            )
            periods = await signing_key_periods(connection)
    finally:
        await pool.close()

    def when(moment: datetime | None) -> str:
        return format_micros(to_micros(moment)) if moment is not None else "-"

    for row in masters:
        state = f"retired {when(row['retired_at'])}" if row["retired_at"] else "in use"
        sys.stdout.write(f"master  {bytes(row['key_id']).hex()}  {state}\n")
    for period in periods:
        sys.stdout.write(
            f"signing {period.key_id}  signed {when(period.first_signed)} .. "
            f"{when(period.last_signed)}\n"
        )
