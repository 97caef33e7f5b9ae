"""The outbox never jams (CONTRACT §2), on a real broker and PostgreSQL: a
message the broker refuses for good is kept as dead with its reason and the
messages behind it are delivered; the copy of a rejected record near the
broker's size limit is cut to fit and delivered; the outbox's health says
when a relay made no progress."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.devtools.kafka_admin import ensure_topics
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.kafka import make_producer, start_producer
from consent_ledger.settings import Settings
from consent_ledger.store.outbox import OutboxHealth, outbox_health
from consent_ledger.worker.pipeline import BatchPipeline
from consent_ledger.worker.relay import OutboxRelay
from tests.integration.test_producer import published

pytestmark = [pytest.mark.integration]

ADD = "INSERT INTO outbox (topic, key, value, headers, subject) VALUES ($1, $2, $3, '[]', NULL)"


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, kafka_idempotence=False)
    made = make_producer(settings, client_id="test-relay")
    await start_producer(made, settings)
    try:
        yield made
    finally:
        await made.stop()


@pytest.fixture
async def topic(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> str:
    name = unique_name("relayed")
    await ensure_topics(kafka_bootstrap, {name: 1})
    return name


async def test_a_message_refused_for_good_is_kept_dead_and_the_rest_go_on(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, kafka_bootstrap: str, topic: str
) -> None:
    async with pool.acquire() as connection:
        await connection.execute(ADD, topic, b"a", b"before")
        await connection.execute(ADD, topic, b"b", b"x" * 1_100_000)  # over any request
        await connection.execute(ADD, topic, b"c", b"after")
    relay = OutboxRelay(pool, producer)
    assert await relay.relay_once() == 3
    assert await relay.relay_once() == 0  # nothing left to retry

    records = await published(kafka_bootstrap, topic, 2)
    assert [(r.key, r.value) for r in records] == [(b"a", b"before"), (b"c", b"after")]
    async with pool.acquire() as connection:
        dead = await connection.fetch("SELECT key, length(value) AS size, reason FROM outbox_dead")
        health = await outbox_health(connection)
    assert [(row["key"], row["size"]) for row in dead] == [(b"b", 1_100_000)]
    assert dead[0]["reason"].startswith("MessageSizeTooLargeError")
    assert (health.depth, health.dead) == (0, 1)
    assert (relay.sent, relay.dead) == (2, 1)


async def test_the_copy_of_a_record_near_the_broker_limit_is_cut_and_delivered(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, kafka_bootstrap: str, topic: str
) -> None:
    settings = Settings(rejected_topic=topic)
    pipeline = BatchPipeline(pool, KeyRing(os.urandom(32)), load_reference_policy(), settings)
    raw = b"\x01" * 1_048_400  # as `publish --raw` can send it
    await pipeline.process([Record(0, 0, raw, (), b"anna")])
    relay = OutboxRelay(pool, producer)
    assert await relay.relay_once() == 1

    (copy,) = await published(kafka_bootstrap, topic, 1)
    headers = {name: value.decode() for name, value in copy.headers}
    assert headers["reason"] == "too-large"
    assert (headers["raw_truncated"], headers["raw_size"]) == ("true", str(len(raw)))
    assert copy.key == b"anna" and raw.startswith(copy.value)
    assert relay.dead == 0


async def test_health_says_when_messages_wait_while_no_relay_progresses(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str
) -> None:
    async with pool.acquire() as connection:
        await connection.execute(ADD, topic, None, b"waiting")
        assert not (await outbox_health(connection)).stuck_for(60)
        # As it looks two minutes later with no relay running.
        await connection.execute("UPDATE outbox SET created_at = now() - interval '2 minutes'")
        await connection.execute(
            "UPDATE outbox_relay SET progressed_at = now() - interval '2 minutes'"
        )
        stuck = await outbox_health(connection)
    assert stuck.stuck_for(60)
    assert stuck.depth == 1 and stuck.oldest_age_s >= 120 and stuck.since_progress_s >= 120
    await OutboxRelay(pool, producer).relay_once()
    async with pool.acquire() as connection:
        after = await outbox_health(connection)
    assert not after.stuck_for(60)
    assert after.depth == 0 and after.since_progress_s < 60


def test_health_of_an_empty_outbox_is_never_stuck() -> None:
    assert not OutboxHealth(0, 0.0, 5, 3_600.0).stuck_for(60)
    assert not OutboxHealth(3, 10.0, 0, 3_600.0).stuck_for(60)  # just arrived
    assert not OutboxHealth(3, 3_600.0, 0, 5.0).stuck_for(60)  # a backlog, moving
    assert OutboxHealth(3, 61.0, 0, 61.0).stuck_for(60)
