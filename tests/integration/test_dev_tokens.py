"""`dev`'s tokens: an admin token in <data-folder>/admin.token (0600), a demo
publisher + eraser token, reused while the database knows them."""

from __future__ import annotations

import stat
from pathlib import Path

import asyncpg
import pytest

from consent_ledger.core.roles import Role
from consent_ledger.devtools.tokens import DEMO_SOURCES, ensure_dev_tokens
from consent_ledger.store.tokens import TokenStore

pytestmark = pytest.mark.integration


async def test_dev_tokens_are_made_once_and_kept_private(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with pool.acquire() as connection:
        first = await ensure_dev_tokens(connection, tmp_path)
        again = await ensure_dev_tokens(connection, tmp_path)
    assert again == first
    assert first.admin_file == tmp_path / "admin.token"
    assert first.admin_file.read_text().strip() == first.admin
    for name in ("admin.token", "demo-publisher.token"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    store = TokenStore(pool)
    admin = await store.caller(first.admin)
    demo = await store.caller(first.demo_publisher)
    assert admin is not None and admin.roles == {Role.ADMIN}
    assert demo is not None and demo.roles == {Role.PUBLISHER, Role.ERASER}
    assert demo.sources == set(DEMO_SOURCES)


async def test_a_token_file_the_database_does_not_know_is_replaced(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    (tmp_path / "admin.token").write_text("clt_from-another-database\n")
    (tmp_path / "admin.token").chmod(0o644)
    async with pool.acquire() as connection:
        tokens = await ensure_dev_tokens(connection, tmp_path)
        await TokenStore(connection).revoke("dev-admin")
        renewed = await ensure_dev_tokens(connection, tmp_path)
    assert tokens.admin != "clt_from-another-database"
    assert stat.S_IMODE((tmp_path / "admin.token").stat().st_mode) == 0o600
    assert renewed.admin != tokens.admin
    assert renewed.demo_publisher == tokens.demo_publisher
    assert await TokenStore(pool).caller(renewed.admin) is not None
