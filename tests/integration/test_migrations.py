"""Migrations are applied at start by every worker and API process, so several
may start at once against a fresh database, and every restart runs them again."""

from __future__ import annotations

import asyncio
import os
import subprocess

import asyncpg
import pytest

from consent_ledger.store.batch_write import (
    ConsentChangeRow,
    CurrentConsentRow,
    DisclosureRow,
    LedgerEntryRow,
    MerkleLogRow,
    OutboxRow,
    RejectedRow,
    SubjectKeyRow,
    ViolationRow,
)
from consent_ledger.store.migrate import migrate, migrations
from tests.e2e.conftest import CLI

pytestmark = pytest.mark.integration

ROW_SHAPES = {
    "subject_keys": SubjectKeyRow,
    "ledger_entries": LedgerEntryRow,
    "merkle_logs": MerkleLogRow,
    "consent_changes": ConsentChangeRow,
    "current_consents": CurrentConsentRow,
    "disclosures": DisclosureRow,
    "violations": ViolationRow,
    "outbox": OutboxRow,
    "rejected_events": RejectedRow,
}


async def test_processes_migrating_at_once_apply_each_migration_once(database_url: str) -> None:
    env = dict(os.environ, LEDGER_DATABASE_URL=database_url)

    def run_migrate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), "migrate"], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    results = await asyncio.gather(*(asyncio.to_thread(run_migrate) for _ in range(3)))

    assert [result.returncode for result in results] == [0, 0, 0], [r.stderr for r in results]
    names = [migration.name for migration in migrations()]
    # One process applied them all, in order; the others waited, then found nothing to do.
    outputs = sorted(result.stdout.strip() for result in results)
    assert outputs == [f"applied {', '.join(names)}"] + ["the schema is up to date"] * 2
    connection = await asyncpg.connect(database_url)
    try:
        recorded = await connection.fetch("SELECT version, name FROM schema_migrations")
        assert sorted((row["version"], row["name"]) for row in recorded) == [
            (migration.version, migration.name) for migration in migrations()
        ]
        # Running them again, as every restart does, changes nothing.
        assert await migrate(connection) == []
        assert await connection.fetchval("SELECT count(*) FROM schema_migrations") == len(names)
    finally:
        await connection.close()


async def test_each_batch_row_shape_is_its_tables_columns_in_order(database_url: str) -> None:
    """The batch write feeds each table one array of the table's own row type, built
    from these named tuples by position: a column a migration adds or moves must
    show up here, not as a batch that writes into the wrong column."""
    connection = await asyncpg.connect(database_url)
    try:
        await migrate(connection)
        for table, row in ROW_SHAPES.items():
            columns = await connection.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                table,
            )
            assert tuple(column["column_name"] for column in columns) == row._fields, table
    finally:
        await connection.close()
