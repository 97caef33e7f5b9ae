"""Analysts' SQL (CONTRACT §8): a member of ``consent_ledger_analyst`` reads the
views of the schema ``analytics`` and nothing else; docs/analytics.md lists
exactly the views' columns and types; erased subjects' data does not show."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.devtools.databases import database_dsn, drop_database
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.store.batch_write import ERASED_EXPLANATION
from consent_ledger.store.migrate import migrate
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import module_database
from tests.e2e.conftest import SCENARIOS

pytestmark = [pytest.mark.integration]

ANALYST = "consent_ledger_analyst"
DOC = Path(__file__).parents[2] / "docs" / "analytics.md"
# "## `analytics.name`" opens a view's section; its table rows are "| `column` | `type` | meaning |".
_VIEW_HEADING = re.compile(r"^## `analytics\.([a-z0-9_]+)`\s*$")
_COLUMN_ROW = re.compile(r"^\| `([a-z0-9_]+)` \| `([a-z \[\]]+)` \| .+\|\s*$")
# Each view's columns, in order, with their types as PostgreSQL names them.
VIEW_COLUMNS = """
SELECT c.relname AS view, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       col_description(c.oid, a.attnum) AS comment, obj_description(c.oid, 'pg_class') AS about
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = 'analytics'
ORDER BY c.relname, a.attnum
"""


def documented_views() -> dict[str, list[tuple[str, str]]]:
    """docs/analytics.md read as {view: [(column, type), ...]}."""
    views: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in DOC.read_text("utf-8").splitlines():
        if heading := _VIEW_HEADING.match(line):
            current = views.setdefault(heading.group(1), [])
        elif line.startswith("## "):
            current = None
        elif current is not None and (row := _COLUMN_ROW.match(line)):
            current.append((row.group(1), row.group(2)))
    return views


@pytest.fixture(scope="module")
async def ledger_url(pg_server_dsn: str) -> AsyncIterator[str]:
    """One database for the module, migrated by its owner (the superuser) and fed
    two scenarios through the worker's pipeline: `erasure` (ola erased, pia not)
    and `consent-lifecycle` (consents given, withdrawn, expiring)."""
    async with module_database(pg_server_dsn, "analytics", max_size=2) as (dsn, pool):
        pipeline = BatchPipeline(pool, KeyRing(os.urandom(32)), load_reference_policy(), Settings())
        for partition, scenario in enumerate(("erasure", "consent-lifecycle")):
            lines = (SCENARIOS / scenario / "events.jsonl").read_bytes().splitlines()
            await pipeline.process([Record(partition, n, line) for n, line in enumerate(lines)])
        yield dsn


@pytest.fixture(scope="module")
async def owner(ledger_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(ledger_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def analyst(ledger_url: str, owner: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A BI tool's login, as deploy/README.md says to make one: a LOGIN role in
    the group role the migration created."""
    login = f"alice_{uuid.uuid4().hex[:8]}"
    await owner.execute(f"CREATE ROLE {login} LOGIN IN ROLE {ANALYST}")
    connection = await asyncpg.connect(ledger_url, user=login)
    try:
        yield connection
    finally:
        await connection.close()
        await owner.execute(f"DROP ROLE {login}")


async def test_the_migration_makes_the_group_role_without_login(owner: asyncpg.Connection) -> None:
    role = await owner.fetchrow(
        "SELECT rolcanlogin, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = $1", ANALYST
    )
    assert role is not None and not any(role.values())
    # Migrating again (another database of the cluster, a restart) finds the role there.
    assert await migrate(owner) == []


async def test_the_documented_columns_are_the_views_columns(owner: asyncpg.Connection) -> None:
    actual: dict[str, list[tuple[str, str]]] = {}
    for row in await owner.fetch(VIEW_COLUMNS):
        actual.setdefault(row["view"], []).append((row["name"], row["type"]))
        assert row["about"], f"analytics.{row['view']} has no COMMENT ON VIEW"
        assert row["comment"], f"analytics.{row['view']}.{row['name']} has no COMMENT ON COLUMN"
    documented = documented_views()
    assert len(documented) >= 8
    assert documented == actual


async def test_the_analyst_reads_every_view(analyst: asyncpg.Connection) -> None:
    counts = {
        view: await analyst.fetchval(f"SELECT count(*) FROM analytics.{view}")
        for view in documented_views()
    }
    empty = {view for view, count in counts.items() if count == 0}
    assert empty == {"policy_versions"}, counts  # nothing was published over the API


@pytest.mark.parametrize(
    "statement",
    [
        # Views of one table are updatable in PostgreSQL: only privileges stop a write.
        "INSERT INTO analytics.policy_versions (version) VALUES ('x')",
        "UPDATE analytics.current_consents SET purpose = 'x'",
        "DELETE FROM analytics.consent_events",
        "CREATE VIEW analytics.mine AS SELECT 1 AS one",
        "SELECT payload FROM ledger_entries LIMIT 1",
        "SELECT wrapped_key FROM public.subject_keys",
    ],
)
async def test_the_analyst_may_not_write_nor_read_around_the_views(
    analyst: asyncpg.Connection, statement: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await analyst.execute(statement)


async def test_the_analyst_is_refused_every_table(
    analyst: asyncpg.Connection, owner: asyncpg.Connection
) -> None:
    tables = [
        row["name"]
        for row in await owner.fetch(
            "SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
    ]
    assert "public.ledger_entries" in tables and "public.api_tokens" in tables
    readable = []
    for table in tables:
        try:
            await analyst.fetch(f"SELECT 1 FROM {table} LIMIT 1")
        except asyncpg.InsufficientPrivilegeError:
            continue
        readable.append(table)
    assert readable == []


async def test_an_erased_subject_shows_only_as_erased(
    analyst: asyncpg.Connection, owner: asyncpg.Connection
) -> None:
    """ola is erased: no consent or disclosure of hers shows, her violations stay
    without their explanation; pia's disclosure shows."""
    for view in ("disclosures", "consent_events", "current_consents"):
        subjects = {
            row["subject"] for row in await analyst.fetch(f"SELECT subject FROM analytics.{view}")
        }
        assert "ola" not in subjects, view
    assert await analyst.fetchval(
        "SELECT count(*) FROM analytics.disclosures WHERE subject = 'pia'"
    )
    hers = await analyst.fetch(
        "SELECT subject_erased, explanation FROM analytics.violations WHERE subject = 'ola'"
    )
    assert hers and {tuple(row.values()) for row in hers} == {(True, ERASED_EXPLANATION)}
    # The views do not rely on the worker's deletions: a row of hers left in a read
    # model (restored from a backup, say) still does not show.
    with pytest.raises(RolledBack):
        async with owner.transaction():
            await leave_rows_of_ola(owner)
            for view in ("consent_events", "current_consents", "disclosures"):
                shown = await owner.fetchval(
                    f"SELECT count(*) FROM analytics.{view} WHERE subject = 'ola'"
                )
                assert shown == 0, view
            explanations = await owner.fetch(
                "SELECT DISTINCT explanation FROM analytics.violations WHERE subject = 'ola'"
            )
            assert [row["explanation"] for row in explanations] == [ERASED_EXPLANATION]
            assert await owner.fetchval(
                "SELECT sum(disclosures) FROM analytics.daily_disclosures"
            ) == await owner.fetchval("SELECT count(*) FROM analytics.disclosures")
            raise RolledBack


class RolledBack(Exception):
    """Raised to roll a test's changes back."""


async def leave_rows_of_ola(owner: asyncpg.Connection) -> None:
    """What a read model restored from before ola's erasure would hold."""
    await owner.execute(
        "INSERT INTO consent_changes (event_id, subject, purpose, occurred_us, seq, granted,"
        " controller) VALUES ('leftover', 'ola', 'marketing', 0, 0, true, 'c')"
    )
    await owner.execute(
        "INSERT INTO current_consents (subject, purpose, event_id, occurred_us, seq, granted)"
        " VALUES ('ola', 'marketing', 'leftover', 0, 0, true)"
    )
    await owner.execute(
        "INSERT INTO disclosures (event_id, subject, purpose, occurred_us, seq, subject_role,"
        " controller, recipient_kind, recipient_id, data_categories)"
        " VALUES ('leftover', 'ola', 'marketing', 0, 0, 'r', 'c', 'partner', 'p', '{}')"
    )
    await owner.execute("UPDATE violations SET explanation = 'leftover' WHERE subject = 'ola'")


async def test_daily_violations_add_up_to_the_violations(analyst: asyncpg.Connection) -> None:
    daily = await analyst.fetchrow(
        "SELECT sum(opened) AS opened, sum(opened) - sum(retracted) AS open,"
        " sum(open) AS open_column FROM analytics.daily_violations"
    )
    listed = await analyst.fetchrow(
        "SELECT count(*) AS opened, count(*) FILTER (WHERE status = 'open') AS open"
        " FROM analytics.violations"
    )
    assert listed["opened"] > 0
    assert (daily["opened"], daily["open"], daily["open_column"]) == (
        listed["opened"], listed["open"], listed["open"],
    )  # fmt: skip


async def test_current_consents_say_valid_withdrawn_or_expired(
    analyst: asyncpg.Connection,
) -> None:
    statuses = await analyst.fetch(
        "SELECT DISTINCT status FROM analytics.current_consents ORDER BY status"
    )
    assert {row["status"] for row in statuses} <= {"expired", "valid", "withdrawn"}
    assert len(statuses) >= 2


async def test_an_owner_that_may_not_create_roles_grants_the_role_made_before(
    pg_server_dsn: str,
) -> None:
    """As deploy/README.md sets production up: the owner may not create roles, the
    administrator made consent_ledger_analyst before the first migration, and the
    owner's migration grants it the views."""
    suffix = uuid.uuid4().hex[:8]
    owner_name, login, database = f"ledger_{suffix}", f"bob_{suffix}", f"owned_{suffix}"
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", ANALYST):
            await admin.execute(f"CREATE ROLE {ANALYST} NOLOGIN")  # the first test to run
        await admin.execute(f"CREATE ROLE {owner_name} LOGIN NOSUPERUSER NOCREATEROLE")
        await admin.execute(f"CREATE DATABASE {database} OWNER {owner_name}")
        await admin.execute(f"CREATE ROLE {login} LOGIN IN ROLE {ANALYST}")
        dsn = database_dsn(pg_server_dsn, database)
        owner = await asyncpg.connect(dsn, user=owner_name)
        try:
            await migrate(owner)
        finally:
            await owner.close()
        analyst = await asyncpg.connect(dsn, user=login)
        try:
            assert await analyst.fetchval("SELECT count(*) FROM analytics.violations") == 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await analyst.fetch("SELECT 1 FROM violations")
        finally:
            await analyst.close()
    finally:
        await drop_database(pg_server_dsn, database)  # before its owner goes
        await admin.execute(f"DROP ROLE IF EXISTS {login}")
        await admin.execute(f"DROP ROLE IF EXISTS {owner_name}")
        await admin.close()
