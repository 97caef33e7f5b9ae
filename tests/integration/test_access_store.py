"""Tokens and the access log in a real PostgreSQL: only a token's hash is kept,
revocation and expiry take effect at once, and the access log is append-only,
also for the service's own database role."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from consent_ledger.core.roles import Role
from consent_ledger.store.access_log import AccessLog
from consent_ledger.store.tokens import TokenError, TokenStore, token_digest
from tests.conftest import SERVICE_ROLE

pytestmark = pytest.mark.integration

REFUSED = (asyncpg.InsufficientPrivilegeError, asyncpg.RaiseError)


async def test_a_token_identifies_its_caller_and_only_its_hash_is_kept(pool: asyncpg.Pool) -> None:
    store = TokenStore(pool)
    token, record = await store.issue(
        "crm", ["eraser", "publisher"], sources=["urn:system:crm", "urn:system:crm"]
    )
    assert record.roles == ("publisher", "eraser")  # in the table's order
    assert record.sources == ("urn:system:crm",)
    caller = await store.caller(token)
    assert caller is not None
    assert (caller.name, caller.roles, caller.sources) == (
        "crm",
        {Role.PUBLISHER, Role.ERASER},
        {"urn:system:crm"},
    )
    assert await store.caller(token + "x") is None
    stored = await pool.fetchrow("SELECT * FROM api_tokens")
    assert stored["token_sha256"] == token_digest(token)
    assert token not in str(dict(stored))
    [listed] = await store.tokens()
    assert listed.last_used_at is not None  # the lookup above recorded its use


async def test_revoked_and_expired_tokens_stop_at_once(pool: asyncpg.Pool) -> None:
    store = TokenStore(pool)
    token, _ = await store.issue("analyst-1", ["analyst"])
    assert await store.revoke("analyst-1")
    assert await store.caller(token) is None
    assert not await store.revoke("analyst-1")
    assert [record.name for record in await store.tokens()] == []
    [revoked] = await store.tokens(include_revoked=True)
    assert revoked.revoked_at is not None
    # The name is free again once its token is revoked.
    again, _ = await store.issue("analyst-1", ["analyst"])
    assert await store.caller(again) is not None

    soon, _ = await store.issue(
        "short", ["auditor"], expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    assert await store.caller(soon) is not None
    await pool.execute(
        "UPDATE api_tokens SET expires_at = now() - interval '1 s' WHERE name = 'short'"
    )
    assert await store.caller(soon) is None


@pytest.mark.parametrize(
    ("name", "roles", "sources", "problem"),
    [
        ("crm", ["publisher"], [], "lists the sources"),
        ("ops", ["operator"], ["urn:system:crm"], "sources bind a publisher"),
        ("x", ["root"], [], "unknown role root"),
        ("x", [], [], "at least one role"),
        (" ", ["admin"], [], "needs a name"),
    ],
)
async def test_tokens_that_make_no_sense_are_refused(
    pool: asyncpg.Pool, name: str, roles: list[str], sources: list[str], problem: str
) -> None:
    with pytest.raises(TokenError, match=problem):
        await TokenStore(pool).issue(name, roles, sources=sources)


async def test_a_live_name_is_taken_once(pool: asyncpg.Pool) -> None:
    store = TokenStore(pool)
    await store.issue("admin", ["admin"])
    with pytest.raises(TokenError, match="exists"):
        await store.issue("admin", ["admin"])


async def test_the_access_log_filters_and_pages(pool: asyncpg.Pool) -> None:
    log = AccessLog(pool)
    for number in range(5):
        await log.record(
            token_name="po" if number % 2 else "analyst",
            role="privacy-officer" if number % 2 else "analyst",
            endpoint="GET /v1/subjects/{subject}/events",
            subjects=[f"s-{number}", "shared"],
            purpose="art-15" if number == 1 else None,
        )
    everything = await log.page(after_id=0, limit=10)
    assert everything[0].subjects == ("s-0", "shared")
    assert len(await log.page(after_id=0, limit=10, subject="shared")) == 5
    assert [row.subjects for row in await log.page(after_id=0, limit=10, subject="s-3")] == [
        ("s-3", "shared")
    ]
    by_token = await log.page(after_id=0, limit=10, token_name="po")
    assert [row.purpose for row in by_token] == ["art-15", None]
    second_page = await log.page(after_id=everything[1].id, limit=2)
    assert [row.id for row in second_page] == [everything[2].id, everything[3].id]
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert await log.page(after_id=0, limit=10, since=later) == []
    assert len(await log.page(after_id=0, limit=10, until=later)) == 5


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE access_log SET subjects = '{}'",
        "DELETE FROM access_log",
        "TRUNCATE access_log",
        "ALTER TABLE access_log DISABLE TRIGGER access_log_no_update",
        "DROP TABLE access_log",
        "DELETE FROM api_tokens",
    ],
)
async def test_the_service_role_appends_to_the_access_log_and_nothing_more(
    service_pool: asyncpg.Pool, statement: str
) -> None:
    log = AccessLog(service_pool)
    await log.record(
        token_name="po",
        role="privacy-officer",
        endpoint="GET /v1/rejected",
        subjects=["anna"],
        purpose=None,
    )
    token, _ = await TokenStore(service_pool).issue("po", ["privacy-officer"])  # the API issues
    async with service_pool.acquire() as connection:
        assert await connection.fetchval("SELECT current_user") == SERVICE_ROLE
        with pytest.raises(REFUSED):
            await connection.execute(statement)
    assert [row.subjects for row in await log.page(after_id=0, limit=5)] == [("anna",)]
    assert await TokenStore(service_pool).caller(token) is not None


async def test_the_owner_cannot_change_the_access_log_either(pool: asyncpg.Pool) -> None:
    await AccessLog(pool).record(
        token_name="po",
        role="privacy-officer",
        endpoint="GET /v1/rejected",
        subjects=["anna"],
        purpose=None,
    )
    for statement in ("UPDATE access_log SET purpose = 'x'", "DELETE FROM access_log"):
        with pytest.raises(REFUSED):
            await pool.execute(statement)
