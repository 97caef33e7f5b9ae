"""POST each alert to the webhooks that take it (``LEDGER_WEBHOOKS``, CONTRACT §8),
apart from the batch loop.

The outbox relay queues one ``webhook_deliveries`` row per alert and hook
(:meth:`WebhookDispatcher.deliveries_for`) in the transaction that records the
alert as published; this dispatcher sends them. A table rather than an
in-process queue, so that an alert published just before a crash or a stop
still reaches every hook, from whichever worker runs next, and so that several
workers share the work without sending a row twice.

Each URL has a task of its own, sending at most ``per_url`` POSTs at a time,
and a POST holds no database connection while it waits: a receiver that is
slow, down or hanging delays no other URL, no batch, no alert on the topic.

* What a receiver gets (body, signature, timestamp, delivery id):
  :mod:`consent_ledger.webhooks`.
* Any 2xx answer within ``timeout_s`` delivers it. Anything else (no
  connection, no answer in time, another status, a redirect included) is a
  failed attempt: retried after a backoff with jitter (``retry_base_s``
  doubling up to ``retry_cap_s``, :func:`~consent_ledger.webhooks.retry_delay`),
  each delivery on its own schedule, so one alert a receiver refuses holds back
  none of the others. A delivery still failing ``horizon_s`` (a day) after it
  was queued is dead, with its last error, and is not tried again.
* Once: a row is leased (its ``next_attempt_at`` moved past the POST's
  timeout) before its POST, with ``FOR UPDATE SKIP LOCKED``, so a second
  worker leaves it alone, and marked delivered after the 2xx. A receiver sees
  an alert twice only if a worker stopped between its answer and that record
  (a crash, or the database out of reach for longer than the lease): the
  repeat carries the same ``X-Ledger-Delivery``, so the receiver can drop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import asyncpg
import orjson
import structlog

from consent_ledger.store.webhook_deliveries import (
    LeasedDelivery,
    QueuedDelivery,
    lease_due,
    mark_delivered,
    mark_failed,
)
from consent_ledger.webhooks import Webhook, retry_delay, signed_headers

log = structlog.get_logger(__name__)

DAY_S = 86_400.0


class WebhookDispatcher:
    """Delivers queued alerts to the webhooks; wake it with :meth:`notify`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        hooks: Sequence[Webhook],
        *,
        topic: str,
        timeout_s: float = 10.0,
        retry_base_s: float = 5.0,
        retry_cap_s: float = 3_600.0,
        horizon_s: float = DAY_S,
        per_url: int = 4,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._pool = pool
        self.hooks = {hook.url: hook for hook in hooks}
        self.topic = topic
        self._timeout_s = timeout_s
        self._retry_base_s = retry_base_s
        self._retry_cap_s = retry_cap_s
        self._horizon_s = horizon_s
        self._per_url = per_url
        self._draw = draw
        self._wake = {url: asyncio.Event() for url in self.hooks}
        self.delivered = 0
        self.failed = 0  # failed attempts
        self.dead = 0

    def deliveries_for(self, published: Sequence[tuple[str, bytes]]) -> list[QueuedDelivery]:
        """One delivery per hook that takes it, for each alert among the
        ``(topic, value)`` messages the broker took; other topics' messages are
        none of its business."""
        deliveries: list[QueuedDelivery] = []
        for topic, value in published:
            if topic != self.topic or not self.hooks:
                continue
            try:
                alert: Any = orjson.loads(value)
            except orjson.JSONDecodeError:
                alert = None
            if not isinstance(alert, dict) or not isinstance(alert.get("id"), str):
                log.error("alert not understood, not sent to webhooks", size=len(value))
                continue
            violation = alert.get("violation")
            subject = violation.get("subject") if isinstance(violation, dict) else None
            deliveries.extend(
                QueuedDelivery(
                    str(uuid.uuid4()), hook.url, hook.name, alert["id"],
                    subject if isinstance(subject, str) else None, value,
                )
                for hook in self.hooks.values()
                if hook.takes(alert)
            )  # fmt: skip
        return deliveries

    def notify(self) -> None:
        for event in self._wake.values():
            event.set()

    async def run(self, idle_poll_s: float = 1.0) -> None:
        """Deliver until cancelled: one task per URL. Between wake-ups each URL
        looks every ``idle_poll_s`` for retries that fell due."""
        if not self.hooks:
            return
        async with (
            aiohttp.ClientSession() as session,
            asyncio.TaskGroup() as group,
        ):
            for url in self.hooks:
                group.create_task(self._serve(session, url, idle_poll_s))

    async def _serve(self, session: aiohttp.ClientSession, url: str, idle_poll_s: float) -> None:
        wake, name = self._wake[url], self.hooks[url].name
        while True:
            wake.clear()
            try:
                while await self.deliver_due(session, url):
                    pass
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("webhook deliveries unreadable, will retry", hook=name, error=repr(exc))
            except Exception as exc:  # never crash the worker over an alert copy: retry later
                log.exception("webhook delivery failed, will retry", hook=name, error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=idle_poll_s)

    async def deliver_due(self, session: aiohttp.ClientSession, url: str) -> int:
        """POST up to ``per_url`` due deliveries to ``url`` at once and record
        how each went; how many were tried (0: nothing is due)."""
        lease_s = self._timeout_s + 20.0
        async with self._pool.acquire() as connection:
            leased = await lease_due(connection, url, self._per_url, lease_s)
        if not leased:
            return 0
        hook = self.hooks[url]
        errors = await asyncio.gather(*(self._post(session, hook, item) for item in leased))
        async with self._pool.acquire() as connection, connection.transaction():
            taken = [
                item.delivery_id
                for item, error in zip(leased, errors, strict=True)
                if error is None
            ]
            await mark_delivered(connection, taken)
            self.delivered += len(taken)
            for item, error in zip(leased, errors, strict=True):
                if error is None:
                    continue
                delay = retry_delay(
                    item.failures + 1, self._retry_base_s, self._retry_cap_s, self._draw
                )
                dead = await mark_failed(
                    connection, item.delivery_id, error,
                    retry_in_s=delay, horizon_s=self._horizon_s,
                )  # fmt: skip
                self._count_failure(hook, item, error, delay, dead)
        return len(leased)

    def _count_failure(
        self, hook: Webhook, item: LeasedDelivery, error: str, delay: float, dead: bool
    ) -> None:
        self.failed += 1
        if dead:
            self.dead += 1
            log.error(
                "webhook delivery dead: still failing at the retry horizon", hook=hook.name,
                delivery=item.delivery_id, attempts=item.attempts, error=error,
            )  # fmt: skip
        else:
            log.warning(
                "webhook did not take the alert, will retry", hook=hook.name,
                delivery=item.delivery_id, attempts=item.attempts, error=error,
                retry_in_s=round(delay, 1),
            )  # fmt: skip

    async def _post(
        self, session: aiohttp.ClientSession, hook: Webhook, item: LeasedDelivery
    ) -> str | None:
        """One signed POST; None when the receiver answered 2xx, else what went
        wrong, in words that name neither the URL nor the secret."""
        headers = signed_headers(hook.secret, item.body, item.delivery_id, time.time())
        try:
            async with session.post(
                hook.url,
                data=item.body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {self._timeout_s:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}".replace(hook.url, hook.name)[:1_024]
