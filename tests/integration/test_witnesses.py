"""Witness deliveries on a real PostgreSQL, to real local HTTP servers.

Two couriers (two workers) share one database; one witness hangs on every
request, another answers at once. Each checkpoint reaches the answering
witness once, in issue order, as fast as if the other did not exist.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
import orjson
import pytest

from consent_ledger.devtools.processes import find_free_port
from consent_ledger.integrity.checkpoints import generate_signing_key
from consent_ledger.integrity.trust import parse_trusted_checkpoint
from consent_ledger.store.checkpoint_copies import CheckpointCopies
from consent_ledger.store.checkpoint_issuer import issue_checkpoint
from consent_ledger.worker.witnesses import WitnessCourier

pytestmark = [pytest.mark.integration]

WAIT_S = 20.0


@contextmanager
def witness(hang: threading.Event | None = None) -> Iterator[tuple[str, list[bytes]]]:
    """A local HTTP server keeping each POSTed body; with ``hang``, every request
    waits until it is set before answering."""
    received: list[bytes] = []
    port = find_free_port()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if hang is not None:
                hang.wait(WAIT_S)
            received.append(body)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/witness", received
    finally:
        if hang is not None:
            hang.set()
        server.shutdown()
        server.server_close()
        thread.join()


async def poll(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def test_a_hanging_witness_delays_neither_another_witness_nor_the_checkpoints(
    pool: asyncpg.Pool,
) -> None:
    hang = threading.Event()
    with witness(hang) as (stuck_url, _), witness() as (good_url, good):
        urls = (stuck_url, good_url)
        copies = CheckpointCopies(witnesses=urls)
        key = generate_signing_key()
        couriers = [WitnessCourier(pool, urls, timeout_s=0.5) for _ in range(2)]
        tasks = [asyncio.create_task(courier.run(idle_poll_s=0.2)) for courier in couriers]
        try:
            started = time.monotonic()
            for _ in range(5):
                await issue_checkpoint(pool, key, "witnessed", force=True, copies=copies)
                for courier in couriers:
                    courier.notify()
            signing_s = time.monotonic() - started

            async def all_delivered() -> bool:
                delivered = await pool.fetchval(
                    "SELECT count(*) FROM witness_deliveries"
                    " WHERE witness_url = $1 AND delivered_at IS NOT NULL",
                    good_url,
                )
                return bool(delivered == 5)

            await poll(all_delivered, "the answering witness to take five checkpoints")
            delivered_s = time.monotonic() - started

            async def stuck_failed() -> bool:
                error = await pool.fetchval(
                    "SELECT last_error FROM witness_deliveries"
                    " WHERE witness_url = $1 AND checkpoint_id = 1",
                    stuck_url,
                )
                return error is not None

            await poll(stuck_failed, "the hanging witness's first POST to time out")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        assert signing_s < 2.0  # signing never waits for a witness
        assert delivered_s < 5.0, delivered_s  # the stuck witness costs the other nothing
        ids = [orjson.loads(body)["id"] for body in good]
        assert ids == [1, 2, 3, 4, 5], "each once, in issue order, though two couriers ran"
        assert sum(courier.delivered for courier in couriers) == 5
        kept = parse_trusted_checkpoint(good[0], "witness")
        assert kept.stored_id == 1 and kept.signed.checkpoint.log_id == "witnessed"

        async with pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT checkpoint_id, attempts, delivered_at, last_error FROM witness_deliveries"
                " WHERE witness_url = $1 ORDER BY checkpoint_id",
                stuck_url,
            )
        # Only the oldest is tried while it fails: a witness gets checkpoints in order.
        assert rows[0]["delivered_at"] is None and rows[0]["attempts"] >= 1
        assert "timed out" in rows[0]["last_error"]
        assert all(row["attempts"] == 0 for row in rows[1:])
