"""POST each signed checkpoint to every witness (``LEDGER_WITNESSES``), apart from the batch loop.

A witness is a service run by someone other than the ledger's operator (an
auditor, a regulator, another company of the group) that keeps every
checkpoint it is given; a rewrite of the ledger then contradicts a copy the
operator cannot reach. Deliveries come from ``witness_deliveries`` rows
(statements in :mod:`consent_ledger.store.witness_deliveries`), staged
with the checkpoint (:mod:`consent_ledger.store.checkpoint_copies`): a table
rather than an in-process queue, so that a checkpoint signed just before a
crash or a clean stop still reaches every witness, from whichever worker runs
next, and so that several workers share the work without sending twice.

Each witness URL has a task of its own, and a POST holds no database
connection while it waits: a witness that is slow or down delays no other
witness, no batch, no checkpoint. A witness gets its checkpoints in issue
order, one POST each:

* body: ``copy_document`` (``{"checkpoint": ..., "id": N}``, JSON), headers
  ``Content-Type: application/json`` and ``Ledger-Checkpoint-Id: N``;
* any 2xx answer within ``timeout_s`` delivers it; anything else is retried
  after 1, 2, 4 ... seconds, at most ``max_backoff_s`` apart, for as long as it
  takes (``attempts`` and ``last_error`` in the row say how it goes);
* the oldest undelivered checkpoint of a URL is leased (its
  ``next_attempt_at`` moved past the POST's timeout) before the POST, so a
  second worker leaves it alone; a worker that dies mid-POST lets the lease
  run out and another sends it again: at least once, exactly once unless a
  worker dies between the witness's answer and the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import asyncpg
import structlog

from consent_ledger.store.checkpoint_copies import copy_document
from consent_ledger.store.witness_deliveries import lease_oldest, mark_delivered, mark_failed

log = structlog.get_logger(__name__)


class WitnessCourier:
    """Delivers staged checkpoints to the witness URLs; wake it with :meth:`notify`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        urls: Sequence[str],
        *,
        timeout_s: float = 10.0,
        max_backoff_s: float = 300.0,
    ) -> None:
        self._pool = pool
        self.urls = tuple(urls)
        self._timeout_s = timeout_s
        self._max_backoff_s = max_backoff_s
        self._wake = {url: asyncio.Event() for url in self.urls}
        self.delivered = 0

    def notify(self) -> None:
        for event in self._wake.values():
            event.set()

    async def run(self, idle_poll_s: float = 5.0) -> None:
        """Deliver until cancelled: one task per witness."""
        if not self.urls:
            return
        async with asyncio.TaskGroup() as group:
            for url in self.urls:
                group.create_task(self._serve(url, idle_poll_s))

    async def _serve(self, url: str, idle_poll_s: float) -> None:
        wake = self._wake[url]
        while True:
            wake.clear()
            try:
                while await self.deliver_next(url):
                    pass
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning(
                    "witness deliveries unreadable, will retry", witness=url, error=repr(exc)
                )
            except Exception as exc:  # never crash the worker over a copy: retry later
                log.exception("witness delivery failed, will retry", witness=url, error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=idle_poll_s)

    async def deliver_next(self, url: str) -> bool:
        """POST the oldest undelivered checkpoint of ``url`` if it is due; True when
        the witness took it (so the next may follow at once)."""
        lease_s = self._timeout_s + 20.0
        async with self._pool.acquire() as connection:
            leased = await lease_oldest(connection, url, lease_s)
        if leased is None:
            return False
        number = leased.checkpoint_id
        started = time.monotonic()
        error = leased.problem
        if leased.signed is not None:
            body = copy_document(number, leased.signed)
            error = await asyncio.to_thread(self._post, url, number, body)
        async with self._pool.acquire() as connection:
            if error is None:
                await mark_delivered(connection, url, number)
            else:
                backoff = min(2.0 ** (leased.attempts - 1), self._max_backoff_s)
                await mark_failed(connection, url, number, backoff, error)
        if error is not None:
            log.warning(
                "witness did not take the checkpoint, will retry", witness=url,
                checkpoint=number, attempts=leased.attempts, error=error,
            )  # fmt: skip
            return False
        self.delivered += 1
        log.info(
            "checkpoint delivered to witness", witness=url, checkpoint=number,
            ms=round((time.monotonic() - started) * 1000, 1),
        )  # fmt: skip
        return True

    async def deliver_due(self, within_s: float) -> None:
        """Deliver what is due to every witness, for at most ``within_s`` seconds in all
        (a stopping worker: what is left waits in the table for another)."""
        if not self.urls:
            return

        async def drain(url: str) -> None:
            while await self.deliver_next(url):
                pass

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await asyncio.gather(*(drain(url) for url in self.urls))

    def _post(self, url: str, number: int, body: bytes) -> str | None:
        """One POST; None when the witness answered 2xx, else what went wrong."""
        request = urllib.request.Request(  # noqa: S310  # the operator's own witness URLs
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Ledger-Checkpoint-Id": str(number)},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                response.read()
                return None
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
