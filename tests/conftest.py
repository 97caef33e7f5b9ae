"""Shared fixtures: a real Kafka-compatible broker and a real PostgreSQL.

- ``kafka_bootstrap`` (session): ``LEDGER_TEST_KAFKA_BOOTSTRAP`` when set, else an
  embedded Tansu broker started for the session (memory-only: producers need
  ``enable_idempotence=False``).
- ``pg_server_dsn`` (session): ``LEDGER_TEST_DATABASE_URL`` when set (a DSN whose
  user may create databases), else an embedded PostgreSQL in a temporary folder
  (see ``postgres_parent_dir``).
- ``database_url`` (function): a fresh, empty database per test, dropped afterwards;
  a copy of a database migrated once per session when the test asks for ``pool``.
- ``postgres_data_parent`` (function): a folder for tests that run their own
  ``EmbeddedPostgres``.
- ``unique_name`` (function): ``unique_name("events")`` -> ``events_3f9c...``, for
  topics, consumer groups, app ids and database names.

Async fixtures and tests share one session-scoped event loop (pyproject.toml sets
``asyncio_default_fixture_loop_scope`` and ``asyncio_default_test_loop_scope``).
The broker and database are only started when a test asks for them, so unit test
runs stay free of I/O.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from consent_ledger.devtools.broker import EmbeddedBroker
from consent_ledger.devtools.databases import create_database, drop_database
from consent_ledger.devtools.postgres import EmbeddedPostgres
from consent_ledger.store.migrate import migrate

KAFKA_BOOTSTRAP_ENV = "LEDGER_TEST_KAFKA_BOOTSTRAP"
DATABASE_URL_ENV = "LEDGER_TEST_DATABASE_URL"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a Kafka-compatible broker for the whole test session."""
    configured = os.environ.get(KAFKA_BOOTSTRAP_ENV)
    if configured:
        yield configured
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL server on which tests may create databases."""
    configured = os.environ.get(DATABASE_URL_ENV)
    if configured:
        yield configured
        return
    with postgres_parent_dir() as parent, EmbeddedPostgres(parent / "data") as server:
        yield server.dsn


@contextlib.contextmanager
def postgres_parent_dir() -> Iterator[Path]:
    """A throw-away folder for an embedded PostgreSQL data folder.

    Not under pytest's ``tmp_path``: as root, the server runs as the system user
    ``embedded_postgres``, which must traverse every parent folder, and each pytest
    run resets ``/tmp/pytest-of-<user>`` to mode 0700, which locks it out.
    """
    parent = Path(tempfile.mkdtemp(prefix="ledger-test-pg-"))
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def postgres_data_parent() -> Iterator[Path]:
    """An empty folder, removed afterwards, fit to hold an embedded PostgreSQL data folder."""
    with postgres_parent_dir() as parent:
        yield parent


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Factory of names unique to this run: ``prefix_<12 hex digits>``.

    Underscores only, so a name is valid as a Kafka topic, a consumer group, a faust
    app id and an unquoted PostgreSQL identifier (keep prefixes short and lowercase).
    """

    def make(prefix: str) -> str:
        return f"{prefix}_{uuid.uuid4().hex[:12]}"

    return make


class MigratedTemplate:
    """A database migrated once for the session, copied for every test that asks
    for ``pool``: a copy costs less than the migrations (about half a second a
    test, over a hundred tests) and holds exactly what they make."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.name: str | None = None

    async def get(self) -> str:
        """The template's name; made (and migrated) on first use."""
        if self.name is None:
            name = f"template_{uuid.uuid4().hex[:12]}"
            connection = await asyncpg.connect(await create_database(self.server_dsn, name))
            try:
                await migrate(connection)
            finally:
                await connection.close()  # a template must have no session to be copied
            self.name = name
        return self.name


@pytest.fixture(scope="session")
async def migrated_template(pg_server_dsn: str) -> AsyncIterator[MigratedTemplate]:
    template = MigratedTemplate(pg_server_dsn)
    try:
        yield template
    finally:
        if template.name is not None:
            await drop_database(pg_server_dsn, template.name)


@pytest.fixture
async def database_url(
    pg_server_dsn: str,
    unique_name: Callable[[str], str],
    migrated_template: MigratedTemplate,
    request: pytest.FixtureRequest,
) -> AsyncIterator[str]:
    """DSN of a fresh database for one test; dropped (connections ended) afterwards.

    Empty, unless the test asks for ``pool`` too, which migrates it: then it is a
    copy of the migrated template, so that the migrations are not run again."""
    name = unique_name("test")
    template = await migrated_template.get() if "pool" in request.fixturenames else None
    dsn = await create_database(pg_server_dsn, name, template=template)
    try:
        yield dsn
    finally:
        await drop_database(pg_server_dsn, name)


@contextlib.asynccontextmanager
async def module_database(
    server_dsn: str, prefix: str, max_size: int = 4
) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A database of its own for a test module's fixture to fill once: its DSN and
    a pool on it, migrated; pool closed and database dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    dsn = await create_database(server_dsn, name)
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size)
        try:
            async with pool.acquire() as connection:
                await migrate(connection)
            yield dsn, pool
        finally:
            await pool.close()
    finally:
        await drop_database(server_dsn, name)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on this test's fresh database, migrated."""
    pool: asyncpg.Pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    async with pool.acquire() as connection:
        await migrate(connection)
    try:
        yield pool
    finally:
        await pool.close()


SERVICE_ROLE = "consent_ledger_service"


@pytest.fixture
async def service_pool(pg_server_dsn: str, database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """As deploy/README.md sets it up: the owner (here the test's superuser) applies
    the migrations; the service connects as consent_ledger_service."""
    admin = await asyncpg.connect(pg_server_dsn)
    if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", SERVICE_ROLE):
        await admin.execute(f"CREATE ROLE {SERVICE_ROLE} LOGIN")
    await admin.close()
    owner = await asyncpg.connect(database_url)
    await migrate(owner)
    await owner.close()
    pool = await asyncpg.create_pool(database_url, user=SERVICE_ROLE, min_size=1, max_size=2)
    assert pool is not None
    try:
        yield pool
    finally:
        await pool.close()
        owner = await asyncpg.connect(database_url)
        await owner.execute(f"DROP OWNED BY {SERVICE_ROLE}")  # its grants in this database
        await owner.close()


@pytest.fixture(scope="session", autouse=True)
def plain_tracebacks_in_logs() -> Iterator[None]:
    """structlog unconfigured (no entry point ran) renders a logged exception with
    rich when it is installed (schemathesis brings it): a panel of every frame's
    source and locals, 20-50 s for one error through the API app on a loaded
    machine. The tests read log lines, not their colours: the default processors,
    the traceback plain."""
    import structlog

    processors = [
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        if isinstance(processor, structlog.dev.ConsoleRenderer)
        else processor
        for processor in structlog.get_config()["processors"]
    ]
    structlog.configure(processors=processors)
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session", autouse=True)
def leaves_the_working_directory_clean() -> Iterator[None]:
    """Fail the run if tests left files or folders in the working directory (faust
    made an ``<app id>-data`` folder there per app before it got a temporary one)."""
    before = set(os.listdir())
    yield
    # Hidden entries are tools' caches (pytest, hypothesis), not what a test leaves.
    left = sorted(name for name in set(os.listdir()) - before if not name.startswith("."))
    assert not left, f"tests left these in {os.getcwd()}: {left}"


TEST_SOURCE = "urn:system:test"


async def issue_token(
    db: asyncpg.Pool | asyncpg.Connection | str,
    *roles: str,
    sources: Sequence[str] = (),
    name: str | None = None,
) -> str:
    """A bearer token with ``roles`` (a publisher's bound to ``sources``, by default
    the source the tests' events name), issued in the database ``db`` (a pool, a
    connection or a DSN) as `consent-ledger token create` issues one."""
    from consent_ledger.store.tokens import TokenStore

    if "publisher" in roles and not sources:
        sources = (TEST_SOURCE,)
    name = name or f"{'+'.join(roles)}-{uuid.uuid4().hex[:8]}"
    if isinstance(db, str):
        connection = await asyncpg.connect(db)
        try:
            await migrate(connection)  # a fresh database: as the CLI does
            token, _ = await TokenStore(connection).issue(name, list(roles), sources=list(sources))
        finally:
            await connection.close()
    else:
        token, _ = await TokenStore(db).issue(name, list(roles), sources=list(sources))
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def signed_in_client(app: Any, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an API app (its lifespan running), every request carrying ``token``."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://api", headers=bearer(token)
        ) as client,
    ):
        yield client


async def assert_counts_kept(pool: asyncpg.Pool) -> None:
    """The counts migration 021 keeps (what /v1/stats and /metrics read) equal a
    full count of the rows, before and after the worker folds them."""
    from consent_ledger.store import row_counts

    async with pool.acquire() as connection:
        kept = await row_counts.kept_counts(connection)
        assert await row_counts.count_differences(connection) == []
        await row_counts.compact(connection)
        assert await row_counts.count_differences(connection) == []
        assert await row_counts.kept_counts(connection) == kept
        assert await connection.fetchval(
            "SELECT count(*) = count(DISTINCT (counted, key)) FROM row_counts"
        ), "a fold leaves one row per key"
