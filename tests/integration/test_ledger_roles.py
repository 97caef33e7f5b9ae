"""The service's database role can append to the ledger and read it, nothing more:
not change or delete rows, not give itself the rights back, not switch the
trigger off, not drop the table (the issue: "append-only in the database")."""

from __future__ import annotations

import os

import asyncpg
import pytest

from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.store.migrate import migrate
from consent_ledger.store.rebuild import rebuild_read_models
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import SERVICE_ROLE
from tests.e2e.conftest import SCENARIOS

pytestmark = [pytest.mark.integration]

REFUSED = (asyncpg.InsufficientPrivilegeError, asyncpg.RaiseError)


async def test_the_service_role_runs_the_pipeline(service_pool: asyncpg.Pool) -> None:
    lines = (SCENARIOS / "erasure" / "events.jsonl").read_bytes().splitlines()
    pipeline = BatchPipeline(
        service_pool, KeyRing(os.urandom(32)), load_reference_policy(), Settings()
    )
    report = await pipeline.process([Record(0, offset, line) for offset, line in enumerate(lines)])
    assert sum(report.accepted_by_type.values()) == len(lines)
    async with service_pool.acquire() as connection:
        assert await connection.fetchval("SELECT current_user") == SERVICE_ROLE
        assert await connection.fetchval("SELECT count(*) FROM ledger_entries") == len(lines)
        assert await migrate(connection) == []  # starting a worker again is fine


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET subject = 'x'",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries",
        "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_no_update",
        "CREATE OR REPLACE FUNCTION ledger_entries_append_only() RETURNS trigger"
        " LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        "DROP TABLE ledger_entries",
        "SET session_replication_role = replica",
        # GRANT without the right only warns; the UPDATE below shows nothing was granted
        "GRANT UPDATE, DELETE ON ledger_entries TO CURRENT_USER",
    ],
)
async def test_the_service_role_cannot_change_the_ledger(
    service_pool: asyncpg.Pool, statement: str
) -> None:
    async with service_pool.acquire() as connection:
        await connection.execute(
            "INSERT INTO ledger_entries VALUES (1, 'e-1', 's', 'ConsentGiven', 0, now(), 0, 0, 0,"
            " '\\x00', '\\x00', '\\x00', 0, '\\x00')"
        )
        with pytest.raises(REFUSED):
            async with connection.transaction():
                await connection.execute(statement)
                await connection.execute("UPDATE ledger_entries SET subject = 'x'")
        assert await connection.fetchval("SELECT subject FROM ledger_entries") == "s"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE checkpoints SET document = '{}'",
        "DELETE FROM checkpoints",
        "TRUNCATE checkpoints",
        "DELETE FROM merkle_logs",
    ],
)
async def test_the_service_role_can_issue_checkpoints_but_not_withdraw_them(
    service_pool: asyncpg.Pool, statement: str
) -> None:
    async with service_pool.acquire() as connection:
        await connection.execute(
            "INSERT INTO checkpoints (issued_at, document) VALUES (now(), '{\"signed\": true}')"
        )
        await connection.execute(
            "INSERT INTO merkle_logs VALUES (0, 1, '\\x00')"
            " ON CONFLICT (kafka_partition) DO UPDATE SET size = 2"
        )  # advancing a log is allowed
        with pytest.raises(REFUSED):
            await connection.execute(statement)
        assert await connection.fetchval("SELECT count(*) FROM checkpoints") == 1
        assert await connection.fetchval("SELECT count(*) FROM merkle_logs") == 1


async def test_the_service_role_rebuilds_and_swaps_the_read_models(
    service_pool: asyncpg.Pool,
) -> None:
    """`consent-ledger rebuild --swap` runs with the worker's credentials: it
    needs temporary tables, the lock on consumer_positions and the read models'
    writes, nothing the owner keeps to itself."""
    keyring = KeyRing(os.urandom(32))
    policy = load_reference_policy()
    pipeline = BatchPipeline(service_pool, keyring, policy, Settings())
    lines = (SCENARIOS / "late-arrivals" / "events.jsonl").read_bytes().splitlines()
    await pipeline.process([Record(0, offset, line) for offset, line in enumerate(lines)])
    async with service_pool.acquire() as connection:
        deleted = await connection.execute("DELETE FROM violations")
        assert deleted != "DELETE 0"
        report = await rebuild_read_models(
            connection, keyring, policy, Settings().events_topic, swap=True
        )
        assert report.swapped and report.differences
        assert (
            await rebuild_read_models(connection, keyring, policy, Settings().events_topic)
        ).equal
