"""The whole service over TLS to Kafka (CONTRACT §7): worker, API and `publish`
as processes, every connection to the broker through TLS with the CA of
LEDGER_KAFKA_CA_FILE (the broker is reachable no other way)."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from consent_ledger.devtools.broker import EmbeddedBroker
from consent_ledger.devtools.kafka_admin import ensure_topics
from consent_ledger.devtools.processes import find_free_port
from consent_ledger.kafka import kafka_security
from consent_ledger.settings import Settings
from tests.e2e.conftest import SCENARIOS, LedgerService
from tests.e2e.test_service import assert_exactly_expected, expected, lines
from tests.transport import tls_broker

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # about 40 s: API, worker and a group join


async def test_worker_api_and_publish_reach_the_broker_over_tls_only(
    database_url: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("tls")
    async with tls_broker(tmp_path) as (bootstrap, ca):
        transport = {
            "LEDGER_KAFKA_BOOTSTRAP": bootstrap,
            "LEDGER_KAFKA_SECURITY_PROTOCOL": "SSL",
            "LEDGER_KAFKA_CA_FILE": str(ca.ca_file),
        }
        topics = {f"{prefix}.events": 4, f"{prefix}.rejected": 1, f"{prefix}.violations": 1,
                  f"{prefix}.checkpoints": 1, f"{prefix}.checkpoints.history": 1}  # fmt: skip
        await ensure_topics(
            bootstrap, topics, security=kafka_security(Settings.from_env(transport))
        )
        env = dict(
            os.environ,
            **transport,
            LEDGER_DATABASE_URL=database_url,
            LEDGER_EVENTS_TOPIC=f"{prefix}.events",
            LEDGER_REJECTED_TOPIC=f"{prefix}.rejected",
            LEDGER_VIOLATIONS_TOPIC=f"{prefix}.violations",
            LEDGER_CHECKPOINTS_TOPIC=f"{prefix}.checkpoints",
            LEDGER_CHECKPOINT_HISTORY_TOPIC=f"{prefix}.checkpoints.history",
            LEDGER_CONSUMER_GROUP=f"{prefix}-workers",
            LEDGER_PARTITIONS="4",
            LEDGER_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(),
            LEDGER_KAFKA_IDEMPOTENCE="false",
            LEDGER_SESSION_TIMEOUT_S="6",
            LEDGER_FETCH_MAX_WAIT_MS=str(EmbeddedBroker.FETCH_MAX_WAIT_MS),
            LEDGER_API_PORT=str(find_free_port()),
        )
        service = LedgerService(env, tmp_path)
        try:
            await service.start_api()  # ready: it reached the broker over TLS
            assert (await service.client.get("/readyz")).json()["checks"]["broker"] == "ok"
            service.start_worker()
            # In a thread: the TLS relay runs on this test's event loop.
            published = await asyncio.to_thread(
                service.publish, SCENARIOS / "consent-lifecycle" / "events.jsonl"
            )
            assert published.returncode == 0, published.stderr
            stats = await service.wait_counted(len(lines("consent-lifecycle")))
            await assert_exactly_expected(service, expected("consent-lifecycle"), stats)
            assert stats["lag"] is not None  # the API read the log's end over TLS too
        finally:
            await service.stop()
