"""Alert webhooks (CONTRACT §8) on a real PostgreSQL, to real local HTTP servers.

Alerts are queued as the relay queues them (``deliveries_for`` then
``queue_deliveries``, in one transaction; the relay itself on a real broker in
the last test), and two dispatchers (two workers) share one database. Each
alert reaches each URL that takes it once, signed; a 500 is retried; a
hanging receiver holds back no other URL; a receiver that never answers 2xx
is dead at the horizon; /v1/stats and /metrics count it all.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from consent_ledger.api.app import create_app
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.core.timeline import Status, Violation, ViolationChange
from consent_ledger.core.verdicts import SEVERITY, Rule
from consent_ledger.devtools.kafka_admin import ensure_topics
from consent_ledger.devtools.processes import find_free_port
from consent_ledger.kafka import make_producer, start_producer
from consent_ledger.settings import Settings
from consent_ledger.store.batch_write import alert_message
from consent_ledger.store.webhook_deliveries import queue_deliveries
from consent_ledger.webhooks import Webhook, parse_webhooks, public_label
from consent_ledger.worker.relay import OutboxRelay
from consent_ledger.worker.webhooks import WebhookDispatcher
from tests.conftest import issue_token, signed_in_client

pytestmark = [pytest.mark.integration]

WAIT_S = 20.0
SECRET = "receiver-secret"


def verified(secret: str, body: bytes, header: str) -> bool:
    """The receiver's check, as README and deploy/README.md print it."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


@dataclass
class Receiver:
    """A local HTTP server: ``answer(delivery_id, nth)`` gives each request's status
    (nth counts that delivery's requests from 1); with ``hang``, every request
    waits until it is set before answering."""

    url: str = ""
    answer: Callable[[str, int], int] = lambda _, __: 200
    hang: threading.Event | None = None
    requests: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)

    def taken(self) -> list[bytes]:
        """The bodies it answered 2xx to."""
        return [body for _, body, status in self.requests if 200 <= status < 300]


@contextmanager
def receiver(**options: object) -> Iterator[Receiver]:
    kept = Receiver(**options)  # type: ignore[arg-type]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if kept.hang is not None:
                kept.hang.wait(WAIT_S)
            headers = dict(self.headers.items())
            with lock:
                nth = 1 + sum(
                    1 for seen, _, _ in kept.requests
                    if seen["X-Ledger-Delivery"] == headers["X-Ledger-Delivery"]
                )  # fmt: skip
                status = kept.answer(headers["X-Ledger-Delivery"], nth)
                kept.requests.append((headers, body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    port = find_free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kept.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield kept
    finally:
        if kept.hang is not None:
            kept.hang.set()
        server.shutdown()
        server.server_close()
        thread.join()


def hooks(*entries: dict[str, object]) -> tuple[Webhook, ...]:
    return parse_webhooks({"webhooks": list(entries)}, "test", lambda key, name: b"")


def alert(number: int, rule: Rule = Rule.CONSENT_MISSING) -> bytes:
    violation = Violation(
        f"e-{number}", rule, f"subject-{number}", SEVERITY[rule], "k", "why", 1_000_000, "v1"
    )
    return alert_message(ViolationChange(Status.OPEN, violation), datetime.now(UTC))


async def queue(pool: asyncpg.Pool, dispatcher: WebhookDispatcher, alerts: Sequence[bytes]) -> int:
    deliveries = dispatcher.deliveries_for([(dispatcher.topic, value) for value in alerts])
    async with pool.acquire() as connection, connection.transaction():
        await queue_deliveries(connection, deliveries)
    dispatcher.notify()
    return len(deliveries)


@asynccontextmanager
async def running(*dispatchers: WebhookDispatcher) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(d.run(idle_poll_s=0.05)) for d in dispatchers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def poll(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def rows_where(pool: asyncpg.Pool, where: str, wanted: int) -> Callable[[], Awaitable[bool]]:
    """A condition: exactly ``wanted`` deliveries match ``where``."""

    async def holds() -> bool:
        found = await pool.fetchval(f"SELECT count(*) FROM webhook_deliveries WHERE {where}")
        return bool(found == wanted)

    return holds


def dispatcher(
    pool: asyncpg.Pool, configured: Sequence[Webhook], **options: float
) -> WebhookDispatcher:
    defaults: dict[str, float] = {"timeout_s": 5.0, "retry_base_s": 0.05, "retry_cap_s": 0.2}
    return WebhookDispatcher(
        pool,
        configured,
        topic="ledger.violations",
        **(defaults | options),  # type: ignore[arg-type]
    )


async def test_each_alert_reaches_each_url_that_takes_it_once_signed(pool: asyncpg.Pool) -> None:
    with receiver() as every, receiver() as withdrawn, receiver() as critical:
        configured = hooks(
            {"url": every.url, "secret": SECRET},
            {"url": withdrawn.url, "secret": "other", "rule": ["consent-withdrawn"]},
            {"url": critical.url, "secret": SECRET, "severity": "critical"},
        )
        alerts = [alert(n) for n in range(8)] + [alert(8, Rule.CONSENT_WITHDRAWN)]
        two_workers = [dispatcher(pool, configured), dispatcher(pool, configured)]
        async with running(*two_workers):
            assert await queue(pool, two_workers[0], alerts) == 9 + 1 + 1
            await poll(rows_where(pool, "delivered_at IS NOT NULL", 11), "eleven deliveries")
    assert sorted(every.taken()) == sorted(alerts)
    assert withdrawn.taken() == critical.taken() == [alerts[-1]]
    for kept, secret in ((every, SECRET), (withdrawn, "other"), (critical, SECRET)):
        assert len(kept.requests) == len(kept.taken()), "each once, though two workers ran"
        for headers, body, _ in kept.requests:
            assert verified(secret, body, headers["X-Ledger-Signature"])
            assert headers["X-Ledger-Timestamp"].isdigit()
            assert headers["Content-Type"] == "application/json"
    ids = {
        headers["X-Ledger-Delivery"]
        for kept in (every, withdrawn, critical)
        for headers, _, _ in kept.requests
    }
    stored = {str(row[0]) for row in await pool.fetch("SELECT delivery_id FROM webhook_deliveries")}
    assert ids == stored and len(ids) == 11
    assert sum(d.delivered for d in two_workers) == 11


async def test_a_500_is_retried_and_the_alert_delivered_once(pool: asyncpg.Pool) -> None:
    with receiver(answer=lambda _, nth: 500 if nth == 1 else 200) as flaky:
        sender = dispatcher(pool, hooks({"url": flaky.url, "secret": SECRET}))
        async with running(sender):
            values = [alert(1), alert(2)]
            await queue(pool, sender, values)
            await poll(rows_where(pool, "delivered_at IS NOT NULL", 2), "both delivered")
    assert [status for _, _, status in flaky.requests].count(500) == 2
    assert sorted(flaky.taken()) == sorted(values)
    by_delivery: dict[str, list[bytes]] = {}
    for headers, body, _ in flaky.requests:
        by_delivery.setdefault(headers["X-Ledger-Delivery"], []).append(body)
    assert all(len(bodies) == 2 and bodies[0] == bodies[1] for bodies in by_delivery.values())
    rows = await pool.fetch("SELECT attempts, failures, last_error FROM webhook_deliveries")
    assert [(row["attempts"], row["failures"], row["last_error"]) for row in rows] == [
        (2, 1, None)
    ] * 2
    assert (sender.delivered, sender.failed, sender.dead) == (2, 2, 0)


async def test_a_hanging_receiver_delays_no_other_url(pool: asyncpg.Pool) -> None:
    hang = threading.Event()
    with receiver(hang=hang) as stuck, receiver() as prompt:
        configured = hooks(
            {"url": stuck.url, "secret": SECRET}, {"url": prompt.url, "secret": SECRET}
        )
        sender = dispatcher(pool, configured, timeout_s=WAIT_S)
        async with running(sender):
            await queue(pool, sender, [alert(n) for n in range(3)])
            await poll(
                rows_where(pool, "delivered_at IS NOT NULL", 3), "the prompt URL to take all three"
            )
            # Every POST to the stuck URL is still waiting for its answer.
            assert stuck.requests == [] and len(prompt.taken()) == 3
            hang.set()
            await poll(rows_where(pool, "delivered_at IS NOT NULL", 6), "the stuck URL to catch up")
    assert sorted(stuck.taken()) == sorted(prompt.taken())
    assert len(stuck.requests) == 3


async def test_a_url_failing_to_the_horizon_is_dead_and_counted_in_stats_and_metrics(
    pool: asyncpg.Pool,
) -> None:
    # A chat service's incoming webhook carries its credential in the path.
    closed = f"http://user:password@127.0.0.1:{find_free_port()}/services/T0/B0/p4th?token=t0k"
    with receiver(answer=lambda _, __: 500) as broken, receiver() as fine:
        configured = hooks(
            {"url": broken.url, "secret": SECRET, "name": "broken"},
            {"url": closed, "secret": SECRET},
            {"url": fine.url, "secret": SECRET, "name": "fine"},
        )
        sender = dispatcher(pool, configured, horizon_s=0.5)
        async with running(sender):
            await queue(pool, sender, [alert(1)])
            await poll(rows_where(pool, "dead_at IS NOT NULL", 2), "two deliveries dead")
        await queue(pool, sender, [alert(2)])  # pending: no dispatcher runs now
    attempts = len(broken.requests)
    assert attempts >= 2 and all(status == 500 for _, _, status in broken.requests)

    settings = Settings(master_key="A" * 43 + "=", kafka_idempotence=False)
    app = create_app(settings, pool=pool, policy=load_reference_policy())
    async with signed_in_client(app, await issue_token(pool, "operator")) as client:
        stats = (await client.get("/v1/stats")).json()["webhooks"]
        metrics = (await client.get("/metrics")).text
    async with signed_in_client(app, await issue_token(pool, "analyst")) as client:
        read_by_analyst = (await client.get("/v1/stats")).json()["webhooks"]
    assert [item["url"] for item in read_by_analyst["urls"]] == [
        item["url"] for item in stats["urls"]
    ]
    label = public_label(closed)  # what may be shown of it
    assert label.endswith(":" + closed.rsplit(":", 1)[1].split("/")[0] + "/...")
    by_url = {item["url"]: item for item in stats["urls"]}
    assert set(by_url) == {"broken", "fine", label}
    assert (
        by_url["broken"]["dead"],
        by_url["broken"]["pending"],
        by_url["broken"]["delivered"],
    ) == (1, 1, 0)
    assert by_url["broken"]["failed_attempts"] == attempts
    assert by_url["broken"]["last_error"] == "HTTP 500"
    assert by_url[label]["dead"] == 1 and "ClientConnectorError" in by_url[label]["last_error"]
    assert (by_url["fine"]["delivered"], by_url["fine"]["pending"]) == (1, 1)
    assert (stats["delivered"], stats["dead"], stats["pending"]) == (1, 2, 3)
    assert 'consent_ledger_webhook_deliveries{url="broken",state="dead"} 1' in metrics
    assert f'consent_ledger_webhook_failed_attempts_total{{url="broken"}} {attempts}' in metrics
    assert 'consent_ledger_webhook_deliveries{url="fine",state="delivered"} 1' in metrics
    for shown in (str(stats), str(read_by_analyst), metrics):
        assert "password" not in shown and "t0k" not in shown and SECRET not in shown
        assert "p4th" not in shown and "services" not in shown


async def test_the_relay_queues_each_published_alert_once(
    pool: asyncpg.Pool, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic, other = unique_name("violations"), unique_name("rejected")
    await ensure_topics(kafka_bootstrap, {topic: 1, other: 1})
    settings = Settings(kafka_bootstrap=kafka_bootstrap, kafka_idempotence=False)
    producer: AIOKafkaProducer = make_producer(settings, client_id="test-webhooks")
    await start_producer(producer, settings)
    configured = hooks(
        {"url": "http://127.0.0.1:9/all", "secret": SECRET, "name": "all"},
        {
            "url": "http://127.0.0.1:9/withdrawn",
            "secret": SECRET,
            "name": "withdrawn",
            "rule": "consent-withdrawn",
        },
    )
    sender = WebhookDispatcher(pool, configured, topic=topic)
    values = [alert(1), alert(2, Rule.CONSENT_WITHDRAWN)]
    try:
        async with pool.acquire() as connection:
            for value in values:
                await connection.execute(
                    "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, 'k', $2, '[]')",
                    topic, value,
                )  # fmt: skip
            await connection.execute(
                "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, 'k', 'raw', '[]')",
                other,
            )
        relay = OutboxRelay(pool, producer, webhooks=sender)
        assert await relay.relay_once() == 3
        assert await relay.relay_once() == 0
    finally:
        await producer.stop()
    rows = await pool.fetch(
        "SELECT url, alert_id, subject, body FROM webhook_deliveries ORDER BY url, alert_id"
    )
    assert [(row["url"].rsplit("/", 1)[1], row["subject"], row["body"]) for row in rows] == [
        ("all", "subject-1", values[0]), ("all", "subject-2", values[1]),
        ("withdrawn", "subject-2", values[1]),
    ]  # fmt: skip
    assert [row["alert_id"] for row in rows] == [orjson.loads(row["body"])["id"] for row in rows]
    assert relay.queued_for_webhooks == 3
