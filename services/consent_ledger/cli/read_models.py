"""``rebuild``: recompute the read models from the ledger with the worker's own
core, compare them with the live ones, and with --swap replace them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from consent_ledger.cli.command import (
    EXIT_OK,
    EXIT_VIOLATIONS,
    Commands,
    UsageError,
    add_command,
    settings_from_env,
)
from consent_ledger.core.policy import load_policy_versions


def add_rebuild(commands: Commands) -> None:
    rebuild = add_command(
        commands, "rebuild", "recompute the read models from the ledger and compare them",
        "Recompute every read model (consent changes, current consents, disclosures, "
        "erasures, violations with their status, the accepted and rejected counts) from the "
        "ledger's entries in ingest order with the worker's own core, list each row where "
        "the live ones differ, and with --swap replace the live ones in one transaction "
        "(running workers wait for it). Erased subjects stay erased: their violations are "
        "kept as recorded.",
        "LEDGER_DATABASE_URL (required), LEDGER_MASTER_KEY_FILE or LEDGER_MASTER_KEY "
        "(required), LEDGER_POLICY (the worker's), LEDGER_EVENTS_TOPIC",
        "exit status: 0 the live read models equal the rebuilt ones, 1 they differed (with "
        "--swap: and were replaced), 2 usage error, or the ledger could not be read or "
        "replayed (nothing changed)",
    )  # fmt: skip
    rebuild.add_argument("--swap", action="store_true",
                         help="replace the live read models with the rebuilt ones")  # fmt: skip
    rebuild.set_defaults(run=_rebuild)


def _rebuild(args: argparse.Namespace) -> int:
    import asyncio

    import asyncpg

    from consent_ledger.errors import RebuildError
    from consent_ledger.integrity.keyring import MasterKeyError, load_keyring
    from consent_ledger.store.rebuild import rebuild_read_models

    settings = settings_from_env()
    if not settings.database_url:
        raise UsageError("set LEDGER_DATABASE_URL")
    try:
        keyring = load_keyring(settings.master_key_file, settings.master_key)
    except MasterKeyError as exc:
        raise UsageError(str(exc)) from None
    policy = load_policy_versions(settings.policy_path)  # judge as the worker judges
    database_url = settings.database_url

    async def run() -> Any:
        connection = await asyncpg.connect(database_url)
        try:
            return await rebuild_read_models(
                connection, keyring, policy, settings.events_topic, swap=args.swap
            )
        finally:
            await connection.close()

    try:
        report = asyncio.run(run())
    except RebuildError as exc:
        raise UsageError(f"cannot rebuild: {exc}") from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise UsageError(f"cannot read the ledger: {type(exc).__name__}: {exc}") from None
    for difference in [*report.differences, *report.count_differences, *report.count_drift]:
        sys.stdout.write(f"DIFFERS: {difference.describe()}\n")
    rows = ", ".join(f"{count} {table}" for table, count in report.rows.items())
    sys.stdout.write(
        f"replayed {report.entries} entries of {report.subjects} subjects in "
        f"{report.seconds:.1f} s: {rows}; {report.erased_subjects} erased subjects, whose "
        f"{report.carried_violations} violations are kept as recorded\n"
    )
    found = len(report.differences) + len(report.count_differences) + len(report.count_drift)
    if report.equal:
        sys.stdout.write("OK: the live read models equal the ledger's\n")
    elif report.swapped:
        sys.stdout.write(
            f"REPLACED: {found} differences; the live read models now equal the ledger's\n"
        )
    else:
        sys.stdout.write(f"FAILED: {found} differences; nothing changed (--swap replaces them)\n")
    return EXIT_OK if report.equal else EXIT_VIOLATIONS
