"""Checkpoints leave the database (CONTRACT §10), through the running service.

A worker and an API process, fed with ``publish``; witnesses are real HTTP
servers run by the test (one that answers 503 to its first POSTs, one that
refuses every connection); the copies on the topics are read back with a
Kafka consumer; ``checkpoint save`` talks to the API process over HTTP.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from consent_ledger.devtools.processes import find_free_port, stop_process_groups
from consent_ledger.integrity.checkpoints import load_signing_key, public_key_pem
from tests.e2e.conftest import CLI, SCENARIOS, LedgerService

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class Witness:
    """What a witness was given: each POST's body and ``Ledger-Checkpoint-Id``."""

    url: str
    refuse_first: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ids(self) -> list[int]:
        with self.lock:
            return [body["id"] for body in self.received]


@contextmanager
def witness_server(refuse_first: int = 0) -> Iterator[Witness]:
    """A local HTTP witness that keeps every checkpoint POSTed to /checkpoints."""
    port = find_free_port()
    witness = Witness(f"http://127.0.0.1:{port}/checkpoints", refuse_first)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with witness.lock:
                refuse = witness.refused < witness.refuse_first
                if refuse:
                    witness.refused += 1
                else:
                    assert self.headers["Ledger-Checkpoint-Id"] == str(body["id"])
                    witness.received.append(body)
            self.send_response(503 if refuse else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield witness
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def public_key_file(service: LedgerService) -> Path:
    path = service.folder / "ledger.pub"
    path.write_text(public_key_pem(load_signing_key(Path(service.env["LEDGER_SIGNING_KEY_FILE"]))))
    return path


def cli(service: LedgerService, *args: str) -> subprocess.CompletedProcess[str]:
    """A command as the auditor runs it: the service's environment, and its API
    token as LEDGER_TOKEN when the API asks for one."""
    env = dict(service.env)
    token = getattr(service, "token", None)
    if token:
        env["LEDGER_TOKEN"] = token
    return subprocess.run(
        [str(CLI), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def stored_checkpoints(service: LedgerService) -> list[dict[str, Any]]:
    """Every stored checkpoint as the API lists it, oldest first."""
    return sorted(await service.pages("/v1/ledger/checkpoints"), key=lambda item: item["id"])


async def topic_copies(service: LedgerService, topic: str, count: int) -> list[Any]:
    """The first ``count`` records of a one-partition topic, as (key, value)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=service.env["LEDGER_KAFKA_BOOTSTRAP"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:

        async def read_all() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            records.extend(
                (record.key.decode(), orjson.loads(record.value))
                for found in batch.values()
                for record in found
            )
            return len(records) >= count

        await service.wait_for(read_all, f"{count} records on {topic}")
    finally:
        await consumer.stop()
    return records


def stop_worker(service: LedgerService, worker: subprocess.Popen[bytes]) -> None:
    """Stop a worker as its supervisor would (SIGTERM), and wait for a clean exit."""
    stop_process_groups([worker], timeout=60)
    assert worker.returncode == 0
    service.workers.remove(worker)  # stopped on purpose: not a crash for wait_for


async def test_every_checkpoint_reaches_the_topics_and_each_witness_once(
    ledger_service: LedgerService,
) -> None:
    service = ledger_service
    with witness_server(refuse_first=2) as witness:
        dead = f"http://127.0.0.1:{find_free_port()}/nobody-listens"
        service.env["LEDGER_WITNESSES"] = f"{dead},{witness.url}"
        worker = service.start_worker()
        kept = service.folder / "kept.json"
        public_key = public_key_file(service)

        first = SCENARIOS / "consent-lifecycle" / "events.jsonl"
        service.publish(first)
        stats = await service.wait_counted(
            sum(1 for line in first.read_bytes().splitlines() if line.strip())
        )

        async def all_signed() -> bool:
            latest = await service.client.get("/v1/ledger/checkpoints/latest")
            if latest.status_code != 200:
                return False
            heads = latest.json()["checkpoint"]["tree_heads"]
            return sum(head["size"] for head in heads) == stats["accepted"]

        await service.wait_for(all_signed, "a checkpoint of every entry")
        saved = cli(service, "checkpoint", "save", str(kept), "--api", service.api_url,
                    "--public-key", str(public_key))  # fmt: skip
        assert saved.returncode == 0, saved.stdout + saved.stderr
        assert saved.stdout.startswith("saved checkpoint ")
        again = cli(service, "checkpoint", "save", str(kept), "--api", service.api_url,
                    "--public-key", str(public_key))  # fmt: skip
        assert again.returncode == 2 and "never replaced" in again.stderr

        second = SCENARIOS / "late-arrivals" / "events.jsonl"
        service.publish(second)
        records = stats["accepted"] + stats["duplicates"] + stats["rejected"]
        stats = await service.wait_counted(
            records + sum(1 for line in second.read_bytes().splitlines() if line.strip())
        )
        await service.wait_for(all_signed, "a checkpoint of the grown ledger")

        async def witnessed_all() -> bool:
            stored = [item["id"] for item in await stored_checkpoints(service)]
            return sorted(witness.ids()) == stored

        # The dead witness holds up neither the batches, nor the checkpoints, nor the other.
        await service.wait_for(witnessed_all, "the witness to hold every checkpoint")
        stop_worker(service, worker)
        checkpoints = await stored_checkpoints(service)
        ids = [item["id"] for item in checkpoints]
        assert len(ids) >= 2
        assert witness.ids() == ids, "each checkpoint once, in issue order"
        assert witness.refused == 2
        assert [body["checkpoint"] for body in witness.received] == [
            item["checkpoint"] for item in checkpoints
        ]

        async with asyncpg.create_pool(
            service.env["LEDGER_DATABASE_URL"], min_size=1, max_size=1
        ) as pool:
            rows = await pool.fetch(
                "SELECT checkpoint_id, attempts, delivered_at, last_error FROM witness_deliveries"
                " WHERE witness_url = $1 ORDER BY checkpoint_id",
                dead,
            )
        assert [row["checkpoint_id"] for row in rows] == ids
        assert all(row["delivered_at"] is None and row["attempts"] >= 1 for row in rows[:1])
        assert "Connection refused" in (rows[0]["last_error"] or "")

        history = await topic_copies(
            service, service.env["LEDGER_CHECKPOINT_HISTORY_TOPIC"], len(ids)
        )
        assert [value["id"] for _, value in history] == ids
        assert {key for key, _ in history} == {checkpoints[0]["checkpoint"]["log_id"]}
        latest = await topic_copies(service, service.env["LEDGER_CHECKPOINTS_TOPIC"], len(ids))
        assert latest[-1][1] == checkpoints[-1]

        # What the auditor saved still holds for the grown ledger; so does a copy
        # taken from the topic or a witness, as it is.
        from_witness = service.folder / "from-witness.json"
        from_witness.write_bytes(orjson.dumps(witness.received[0]))
        verified = cli(service, "verify", "--public-key", str(public_key), "--require-signed",
                       "--trusted-checkpoint", str(kept), "--trusted-checkpoint", str(from_witness))  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.startswith("OK: ")
        assert f"{stats['accepted']} signed, 0 unsigned" in verified.stdout


async def test_a_stopped_worker_leaves_its_last_writes_signed(
    ledger_service: LedgerService,
) -> None:
    service = ledger_service
    with witness_server() as witness:
        service.env["LEDGER_WITNESSES"] = witness.url
        service.env["LEDGER_CHECKPOINT_INTERVAL_S"] = "3600"  # no timer: only the stop signs
        worker = service.start_worker()
        events = SCENARIOS / "disclosures-by-recipient" / "events.jsonl"
        service.publish(events)
        stats = await service.wait_counted(
            sum(1 for line in events.read_bytes().splitlines() if line.strip())
        )
        assert (await service.client.get("/v1/ledger/checkpoints/latest")).status_code == 404
        public_key = public_key_file(service)
        unsigned = cli(service, "verify", "--public-key", str(public_key))
        assert unsigned.returncode == 1 and unsigned.stdout.startswith("UNSIGNED: "), (
            unsigned.stdout
        )

        stop_worker(service, worker)
        assert "last checkpoint signed" in service.worker_log(1)

        verified = cli(service, "verify", "--public-key", str(public_key), "--require-signed")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert (
            f" partitions, 1 checkpoints; {stats['accepted']} signed, 0 unsigned" in verified.stdout
        )
        assert verified.stdout.startswith(f"OK: {stats['accepted']} entries in ")
        [checkpoint] = await stored_checkpoints(service)
        assert witness.ids() == [checkpoint["id"]]
        [(_, copy)] = await topic_copies(service, service.env["LEDGER_CHECKPOINTS_TOPIC"], 1)
        assert copy == checkpoint
