"""Alert webhooks' statements: queue an alert for the hooks that take it, lease
what is due for one URL, record the outcome of a POST, and count deliveries
per hook for ``/v1/stats`` and ``/metrics``.

Rows are queued by the outbox relay (:mod:`consent_ledger.worker.relay`) in the
transaction that records the alert as published; the table is migration 019.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import asyncpg

QUEUE = """
INSERT INTO webhook_deliveries (delivery_id, url, hook, alert_id, subject, body)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[])
ON CONFLICT (url, alert_id) DO NOTHING
"""
# The due rows of one URL, oldest due first, leased (moved past the POST's
# timeout) before the POST: SKIP LOCKED lets two workers lease at once without
# taking the same row, and a leased row is not due for anyone else. A failing
# row holds back no other: each is retried on its own schedule.
LEASE_DUE = """
WITH due AS (
    SELECT delivery_id FROM webhook_deliveries
    WHERE url = $1 AND delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at, created_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries AS d
SET next_attempt_at = now() + make_interval(secs => $3), attempts = d.attempts + 1
FROM due WHERE d.delivery_id = due.delivery_id
RETURNING d.delivery_id, d.body, d.attempts, d.failures
"""
DELIVERED = """
WITH done AS (
    UPDATE webhook_deliveries SET delivered_at = now(), last_error = NULL
    WHERE delivery_id = ANY($1::uuid[]) AND delivered_at IS NULL
    RETURNING hook
)
INSERT INTO webhook_totals AS total (hook, delivered)
SELECT hook, count(*) FROM done GROUP BY hook
ON CONFLICT (hook) DO UPDATE SET delivered = total.delivered + EXCLUDED.delivered
"""
# A failure: dead once the row has waited the horizon since it was queued, else
# due again after the backoff, but never after the horizon, so the last try
# falls on it.
FAILED = """
WITH failed AS (
    UPDATE webhook_deliveries SET
        failures = failures + 1,
        last_error = $2,
        dead_at = CASE WHEN now() >= created_at + make_interval(secs => $3) THEN now() END,
        next_attempt_at = least(now() + make_interval(secs => $4),
                                created_at + make_interval(secs => $3))
    WHERE delivery_id = $1 AND delivered_at IS NULL AND dead_at IS NULL
    RETURNING hook, dead_at IS NOT NULL AS dead
), counted AS (
    INSERT INTO webhook_totals AS total (hook, failed_attempts) SELECT hook, 1 FROM failed
    ON CONFLICT (hook) DO UPDATE SET failed_attempts = total.failed_attempts + 1
)
SELECT dead FROM failed
"""
# The totals, and what is still undelivered (pending or dead): no pass over the
# delivered rows, however many there are.
BY_HOOK = """
WITH waiting AS (
    SELECT hook,
           count(*) FILTER (WHERE dead_at IS NULL) AS pending,
           count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead,
           extract(epoch FROM now() - min(created_at) FILTER (WHERE dead_at IS NULL))::float8
               AS oldest_pending_age_s,
           (array_agg(last_error ORDER BY next_attempt_at DESC)
                FILTER (WHERE last_error IS NOT NULL))[1] AS last_error
    FROM webhook_deliveries WHERE delivered_at IS NULL GROUP BY hook
)
SELECT hook, coalesce(total.delivered, 0) AS delivered, coalesce(waiting.pending, 0) AS pending,
       coalesce(waiting.dead, 0) AS dead, coalesce(total.failed_attempts, 0) AS failed_attempts,
       coalesce(waiting.oldest_pending_age_s, 0) AS oldest_pending_age_s, waiting.last_error
FROM webhook_totals AS total FULL JOIN waiting USING (hook) ORDER BY hook
"""


class QueuedDelivery(NamedTuple):
    """One alert for one hook, as the relay queues it."""

    delivery_id: str  # a UUID: X-Ledger-Delivery
    url: str
    hook: str
    alert_id: str
    subject: str | None
    body: bytes


class LeasedDelivery(NamedTuple):
    """A delivery leased for one POST."""

    delivery_id: str
    body: bytes
    attempts: int  # this one included
    failures: int  # before this one


class HookFigures(NamedTuple):
    """Deliveries to one hook, by state; ``last_error`` is that of the latest
    failure of an alert not delivered (a delivered row forgets its errors)."""

    hook: str
    delivered: int
    pending: int
    dead: int
    failed_attempts: int
    oldest_pending_age_s: float
    last_error: str | None


async def queue_deliveries(
    connection: asyncpg.Connection, deliveries: Sequence[QueuedDelivery]
) -> None:
    """Queue ``deliveries`` in the caller's transaction; an alert already queued
    for a URL is not queued again."""
    if deliveries:
        await connection.execute(QUEUE, *(list(column) for column in zip(*deliveries, strict=True)))


async def lease_due(
    connection: asyncpg.Connection, url: str, limit: int, lease_s: float
) -> list[LeasedDelivery]:
    """Lease up to ``limit`` due deliveries to ``url`` for ``lease_s`` seconds."""
    rows = await connection.fetch(LEASE_DUE, url, limit, lease_s)
    return [
        LeasedDelivery(str(row["delivery_id"]), row["body"], row["attempts"], row["failures"])
        for row in rows
    ]


async def mark_delivered(connection: asyncpg.Connection, delivery_ids: Sequence[str]) -> None:
    """Record that the receivers took these deliveries, and count them per hook."""
    if delivery_ids:
        await connection.execute(DELIVERED, list(delivery_ids))


async def mark_failed(
    connection: asyncpg.Connection,
    delivery_id: str,
    error: str,
    *,
    retry_in_s: float,
    horizon_s: float,
) -> bool:
    """Record a failed POST (and count it for its hook); True when the delivery is now dead (it was queued
    ``horizon_s`` or more ago), else it is due again in ``retry_in_s`` seconds
    (at the latest at the horizon)."""
    dead = await connection.fetchval(FAILED, delivery_id, error, horizon_s, retry_in_s)
    return bool(dead)


async def figures_by_hook(connection: asyncpg.Connection) -> list[HookFigures]:
    return [HookFigures(*row.values()) for row in await connection.fetch(BY_HOOK)]
