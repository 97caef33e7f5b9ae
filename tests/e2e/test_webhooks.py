"""Alert webhooks (CONTRACT §8) through the running service: a worker process
started with ``LEDGER_WEBHOOKS``, fed with ``publish``; the receivers are real
HTTP servers run by the test, and the alerts on ``ledger.violations`` are read
back with a Kafka consumer to hold each POSTed body to its message."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from tests.e2e.conftest import SCENARIOS, LedgerService
from tests.integration.test_webhooks import receiver, verified

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def topic_values(service: LedgerService, count: int) -> list[bytes]:
    """The first ``count`` messages of the (one-partition) violations topic."""
    consumer = AIOKafkaConsumer(
        service.env["LEDGER_VIOLATIONS_TOPIC"],
        bootstrap_servers=service.env["LEDGER_KAFKA_BOOTSTRAP"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[bytes] = []
    try:

        async def read_all() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            values.extend(record.value for found in batch.values() for record in found)
            return len(values) >= count

        await service.wait_for(read_all, f"{count} alerts on the topic")
    finally:
        await consumer.stop()
    return values


async def test_every_alert_on_the_topic_reaches_each_webhook_that_takes_it_once_signed(
    ledger_service: LedgerService,
) -> None:
    service = ledger_service
    events = SCENARIOS / "disclosures-by-recipient" / "events.jsonl"
    with receiver() as every, receiver() as critical:
        (service.folder / "every.secret").write_text("e2e-secret\n")
        hooks = service.folder / "webhooks.yaml"
        hooks.write_text(
            "webhooks:\n"
            f"  - {{url: '{every.url}', secret_file: every.secret, name: every}}\n"
            f"  - {{url: '{critical.url}', secret: other, severity: [critical]}}\n"
        )
        service.env["LEDGER_WEBHOOKS"] = str(hooks)
        service.start_worker()
        service.publish(events)
        await service.wait_counted(sum(1 for line in events.read_bytes().splitlines() if line))
        stats: dict[str, Any] = {}

        async def all_delivered() -> bool:
            nonlocal stats
            stats = await service.stats()
            alerts = stats["violations_open"] + 2 * stats["violations_retracted"]
            hooked = stats["webhooks"]
            return (
                stats["outbox"]["depth"] == 0
                and hooked["pending"] == 0
                and len(every.taken()) == alerts
            )

        await service.wait_for(all_delivered, "every alert at the webhook")
        published = await topic_values(service, len(every.taken()))

    assert len(published) == 9  # the scenario's violations, each opened once
    assert sorted(every.taken()) == sorted(published), "each alert once, byte for byte"
    severities = [orjson.loads(value)["violation"]["severity"] for value in published]
    assert sorted(critical.taken()) == sorted(
        value for value, level in zip(published, severities, strict=True) if level == "critical"
    )
    assert 0 < len(critical.taken()) < len(published)
    for kept, secret in ((every, "e2e-secret"), (critical, "other")):
        assert all(verified(secret, body, h["X-Ledger-Signature"]) for h, body, _ in kept.requests)
    by_url = {item["url"]: item for item in stats["webhooks"]["urls"]}
    assert by_url["every"]["delivered"] == 9
    assert stats["webhooks"]["delivered"] == 9 + len(critical.taken())
    assert stats["webhooks"]["dead"] == stats["webhooks"]["failed_attempts"] == 0
