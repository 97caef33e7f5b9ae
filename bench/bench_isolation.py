"""What a poison record costs the worker: a batch stored whole, against the same
batch with one record PostgreSQL refuses (a trigger raising for its event id),
which worker/isolation.py splits down to that record and rejects.

Prints, per batch size, the time to store the batch clean and with the poison
record at its middle, and how many transactions the isolation took. Runs on an
embedded PostgreSQL unless LEDGER_BENCH_DATABASE_URL names a server.

    .venv/bin/python bench/bench_isolation.py [batch sizes...]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from machine import describe

from consent_ledger.core.batch import Record
from consent_ledger.core.intake import ValidEvent, validate
from consent_ledger.core.policy import load_policy
from consent_ledger.devtools.databases import create_database, drop_database
from consent_ledger.devtools.postgres import EmbeddedPostgres
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.store.migrate import migrate
from consent_ledger.worker.isolation import store_isolating
from consent_ledger.worker.pipeline import BatchPipeline

SCENARIO = Path(__file__).resolve().parents[1] / "tests" / "data" / "scenarios" / "random-3000"
REFUSE = """
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.event_id = '{poison}' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;
CREATE TRIGGER refuse BEFORE INSERT ON ledger_entries FOR EACH ROW EXECUTE FUNCTION refuse();
"""


async def store(server: str, lines: list[bytes], poison: str | None) -> tuple[float, int]:
    """Seconds to store ``lines`` as one batch on a fresh database, and transactions."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    dsn = await create_database(server, name)
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        assert pool is not None
        try:
            async with pool.acquire() as connection:
                await migrate(connection)
                if poison is not None:
                    await connection.execute(REFUSE.format(poison=poison))
            policy = load_policy(SCENARIO / "policy.yaml")
            pipeline = BatchPipeline(pool, KeyRing(os.urandom(32)), policy, Settings())
            records = [Record(0, offset, line) for offset, line in enumerate(lines)]
            started = time.perf_counter()
            reports = await store_isolating(pipeline, records)
            return time.perf_counter() - started, len(reports)
        finally:
            await pool.close()
    finally:
        await drop_database(server, name)


async def main() -> None:
    sizes = [int(size) for size in sys.argv[1:]] or [100, 500, 2000]
    lines = [line for line in (SCENARIO / "events.jsonl").read_bytes().splitlines() if line.strip()]
    folder = tempfile.TemporaryDirectory(prefix="bench-pg-")
    server = os.environ.get("LEDGER_BENCH_DATABASE_URL")
    postgres = None if server else EmbeddedPostgres(Path(folder.name) / "data").start()
    server = server or (postgres.dsn if postgres else "")
    print(describe())
    try:
        for size in sizes:
            batch = lines[:size]
            middle = next(
                outcome.id for outcome in map(validate, batch[size // 2 :])
                if isinstance(outcome, ValidEvent)
            )  # fmt: skip
            clean, _ = await store(server, batch, None)
            poisoned, transactions = await store(server, batch, middle)
            print(
                f"batch of {size:>5}: clean {clean * 1000:7.0f} ms; one poison record "
                f"{poisoned * 1000:7.0f} ms in {transactions} commits "
                f"(+{(poisoned - clean) * 1000:.0f} ms)"
            )
    finally:
        if postgres is not None:
            postgres.stop()
        folder.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
