"""`consent-ledger token create|list|revoke` run as a user runs it, on a real
database, as CONTRACT §7 words it."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from consent_ledger.api.app import build_server
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.devtools.processes import find_free_port
from consent_ledger.settings import Settings
from consent_ledger.store.tokens import TokenStore, is_opaque_token
from tests.conftest import issue_token

pytestmark = pytest.mark.integration

CLI = Path(sys.executable).with_name("consent-ledger")


def token_command(
    database_url: str | None, *arguments: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LEDGER_")} | (
        env or {}
    )
    if database_url is not None:
        env["LEDGER_DATABASE_URL"] = database_url
    return subprocess.run(
        [str(CLI), "token", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_create_prints_the_token_last_list_shows_it_revoke_ends_it(database_url: str) -> None:
    created = token_command(database_url, "create", "--role", "publisher", "--role", "eraser",
                            "--source", "urn:system:crm", "urn:system:web", "--name", "crm",
                            "--source", "urn:system:app", "--expires-in", "30")  # fmt: skip
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    token = lines[-1]
    assert is_opaque_token(token)
    assert (
        "roles publisher, eraser; sources urn:system:app, urn:system:crm, urn:system:web"
        in lines[0]
    )
    connection = await asyncpg.connect(database_url)
    try:
        assert await TokenStore(connection).caller(token) is not None  # and so it was used

        listing = token_command(database_url, "list")
        assert listing.returncode == 0, listing.stderr
        assert token not in listing.stdout
        header, row = listing.stdout.splitlines()
        assert header.split() == ["NAME", "ROLES", "SOURCES", "CREATED", "EXPIRES", "LAST", "USED"]
        assert row.split()[:3] == [
            "crm",
            "publisher,eraser",
            "urn:system:app,urn:system:crm,urn:system:web",
        ]
        assert row.split()[-1] != "never"

        assert token_command(database_url, "revoke", "crm").returncode == 0
        assert await TokenStore(connection).caller(token) is None
    finally:
        await connection.close()
    assert len(token_command(database_url, "list").stdout.splitlines()) == 1  # the header
    again = token_command(database_url, "revoke", "crm")
    assert again.returncode == 2
    assert "no live token named 'crm'" in again.stderr


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (["--role", "publisher", "--name", "crm"], "give --source"),
        (["--role", "wizard", "--name", "x"], "unknown role wizard"),
        (["--role", "admin", "--name", "x", "--expires-in", "0"], "at least 1"),
    ],
)
def test_create_refuses_what_makes_no_sense(
    database_url: str, arguments: list[str], problem: str
) -> None:
    refused = token_command(database_url, "create", *arguments)
    assert refused.returncode == 2
    assert problem in refused.stderr


def test_without_a_database_url_it_says_so() -> None:
    refused = token_command(None, "list")
    assert refused.returncode == 2
    assert "set LEDGER_DATABASE_URL" in refused.stderr


async def test_without_the_database_it_goes_through_the_api_with_ledger_token(
    database_url: str, unique_name: Callable[[str], str]
) -> None:
    """An admin's workstation with no database access: LEDGER_TOKEN and the API."""
    admin = await issue_token(database_url, "admin", name="admin")
    settings = Settings(
        database_url=database_url,
        master_key=base64.b64encode(os.urandom(32)).decode(),
        events_topic=unique_name("events"),
        api_port=find_free_port(),
    )
    server = build_server(settings, policy=load_reference_policy())
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), serving
            await asyncio.sleep(0.05)
        env = {"LEDGER_API_URL": f"http://127.0.0.1:{settings.api_port}", "LEDGER_TOKEN": admin}

        def run(*arguments: str) -> subprocess.CompletedProcess[str]:
            return token_command(None, *arguments, env=env)

        created = await asyncio.to_thread(run, "create", "--role", "auditor", "--name", "audit")
        assert created.returncode == 0, created.stderr
        token = created.stdout.splitlines()[-1]
        assert is_opaque_token(token)
        listing = await asyncio.to_thread(run, "list")
        assert [line.split()[0] for line in listing.stdout.splitlines()[1:]] == [
            "admin",
            "audit",
        ]
        assert (await asyncio.to_thread(run, "revoke", "audit")).returncode == 0
        refused = await asyncio.to_thread(
            token_command, None, "list", env=env | {"LEDGER_TOKEN": token}
        )
        assert refused.returncode == 2
        assert "401" in refused.stderr
    finally:
        server.should_exit = True
        await serving
