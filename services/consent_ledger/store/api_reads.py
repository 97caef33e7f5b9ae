"""The API's reads from PostgreSQL: named, parameterised statements, one place.

The API only reads; the worker writes every table (``store/migrations``). Each
request reads through one :meth:`LedgerReader.snapshot`, a read-only
REPEATABLE READ transaction, so a page, the erasure check before it and the
subject key used to open it all see the same moment even while the worker
commits batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from itertools import combinations
from typing import Any, Final

import asyncpg

from consent_ledger.core.policy import PolicyVersions
from consent_ledger.core.reports import (
    Bucket,
    DisclosureCount,
    DisclosureGroup,
    TimeRange,
    ViolationCount,
    ViolationGroup,
)
from consent_ledger.core.subject_report import RecordedDisclosure
from consent_ledger.core.whatif import WhatIf
from consent_ledger.integrity.checkpoints import SignedCheckpoint
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.store import audit_reads, key_rotation, reports, subject_report
from consent_ledger.store.outbox import OutboxHealth, outbox_health
from consent_ledger.store.policy_versions import (
    PublishedVersion,
    publish_version,
    published_versions,
    sealed_data_opener,
    versions_with,
)
from consent_ledger.store.row_counts import RowCounts, kept_counts
from consent_ledger.store.webhook_deliveries import HookFigures, figures_by_hook
from consent_ledger.store.whatif_reads import whatif_recorded

Row = Mapping[str, Any]

PING: Final = "SELECT 1"

ERASURE: Final = """
SELECT event_id, erased_us, recorded_at FROM erasures WHERE subject = $1
"""

CURRENT_CONSENTS: Final = """
SELECT purpose, event_id, occurred_us, seq, granted, expires_us
FROM current_consents WHERE subject = $1
ORDER BY purpose
"""

CONSENT_CHANGES_UNTIL: Final = """
SELECT event_id, purpose, occurred_us, seq, granted, expires_us, controller, channel
FROM consent_changes WHERE subject = $1 AND occurred_us <= $2
ORDER BY purpose, occurred_us, seq
"""

SUBJECT_KEY: Final = "SELECT wrapped_key FROM subject_keys WHERE subject = $1"

SUBJECT_ENTRIES: Final = """
SELECT event_id, type, occurred_us, seq, recorded_at, kafka_partition, kafka_offset,
       leaf_index, payload
FROM ledger_entries
WHERE subject = $1 AND (occurred_us, seq) > ($2, $3)
ORDER BY occurred_us, seq
LIMIT $4
"""

# The next $2 rejected records after id $1, without reading more than $3 bytes of
# raw records in all (a record may be a megabyte): a record's raw is read, cut to
# $3 bytes, only while the raw bytes before it on the page are under $3. Texts are
# cut to $4 characters (one more, so that the caller sees a cut). page_rows is how
# many records the page would have had without the budget.
REJECTED_PAGE: Final = """
WITH page AS (
    SELECT id, raw_bytes,
           coalesce(sum(raw_bytes) OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING
                                         AND 1 PRECEDING), 0) AS bytes_before,
           count(*) OVER () AS page_rows
    FROM (SELECT id, octet_length(raw) AS raw_bytes
          FROM rejected_events WHERE id > $1 ORDER BY id LIMIT $2) AS firsts
)
SELECT r.id, r.reason, left(r.detail, $4 + 1) AS detail, left(r.event_id, $4 + 1) AS event_id,
       left(r.subject, $4 + 1) AS subject, r.kafka_partition, r.kafka_offset, r.recorded_at,
       substring(r.raw FROM 1 FOR $3) AS raw, page.raw_bytes, page.page_rows
FROM page JOIN rejected_events AS r ON r.id = page.id
WHERE page.bytes_before < $3
ORDER BY r.id
"""

POSITION_TOTALS: Final = """
SELECT coalesce(sum(accepted), 0)::bigint AS accepted,
       coalesce(sum(duplicates), 0)::bigint AS duplicates,
       coalesce(sum(rejected), 0)::bigint AS rejected
FROM consumer_positions WHERE topic = $1
"""

NEXT_OFFSETS: Final = """
SELECT kafka_partition, next_offset FROM consumer_positions WHERE topic = $1
"""

BATCH_TIMES: Final = """
SELECT kafka_partition, batches, batch_seconds, batch_seconds_buckets
FROM consumer_positions WHERE topic = $1
"""

# One pass over the open violations for every clause at once (GET /v1/policy).
OPEN_VIOLATIONS_BY_CLAUSE: Final = (
    "SELECT clause, count(*) AS n FROM violations WHERE status = 'open' GROUP BY clause"
)

CHECKPOINTS_PAGE: Final = """
SELECT id, document FROM checkpoints WHERE id < $1 ORDER BY id DESC LIMIT $2
"""

_VIOLATION_COLUMNS: Final = (
    "id, event_id, rule, subject, severity, status, clause, explanation, "
    "occurred_us, detected_at, updated_at, policy_version"
)
VIOLATION_FILTERS: Final = ("status", "subject", "rule")


def _violations_page(filters: frozenset[str]) -> str:
    # One statement per combination of filters rather than "($n IS NULL OR ...)":
    # a generic plan of the latter cannot use the (status, id) or (subject, id) index.
    conditions = ["id > $1"]
    conditions += [
        f"{name} = ${number}"
        for number, name in enumerate(
            (name for name in VIOLATION_FILTERS if name in filters), start=3
        )
    ]
    return (
        f"SELECT {_VIOLATION_COLUMNS} FROM violations WHERE {' AND '.join(conditions)} "  # noqa: S608 (fixed column and filter names)
        "ORDER BY id LIMIT $2"
    )


VIOLATIONS_PAGE: Final[dict[frozenset[str], str]] = {
    frozenset(chosen): _violations_page(frozenset(chosen))
    for size in range(len(VIOLATION_FILTERS) + 1)
    for chosen in combinations(VIOLATION_FILTERS, size)
}
"""The page statement for each set of filters given."""


class LedgerView:
    """The queries, bound to one connection inside a read-only snapshot."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def erasure(self, subject: str) -> Row | None:
        row: Row | None = await self._connection.fetchrow(ERASURE, subject)
        return row

    async def current_consents(self, subject: str) -> list[Row]:
        return list(await self._connection.fetch(CURRENT_CONSENTS, subject))

    async def consent_changes_until(self, subject: str, until_us: int) -> list[Row]:
        """The subject's consent changes with event time at or before ``until_us``,
        by (purpose, occurred_us, seq)."""
        return list(await self._connection.fetch(CONSENT_CHANGES_UNTIL, subject, until_us))

    async def subject_key(self, subject: str) -> bytes | None:
        wrapped: bytes | None = await self._connection.fetchval(SUBJECT_KEY, subject)
        return wrapped

    async def subject_disclosures(self, subject: str) -> list[RecordedDisclosure]:
        """Every disclosure of ``subject``, in event-time order (the subject report)."""
        return await subject_report.subject_disclosures(self._connection, subject)

    async def subject_payloads(self, subject: str) -> list[subject_report.SealedEntry]:
        """The subject's consent, disclosure and visit entries, payloads sealed."""
        return await subject_report.subject_payloads(self._connection, subject)

    async def signing_keys(self) -> list[key_rotation.SigningKeyPeriod]:
        """Every signing key registered, with the period of checkpoints it signed."""
        return await key_rotation.signing_key_periods(self._connection)

    async def subject_entries(self, subject: str, after: tuple[int, int], limit: int) -> list[Row]:
        """Ledger entries of ``subject`` after (occurred_us, seq) ``after``, in event-time order."""
        return list(
            await self._connection.fetch(SUBJECT_ENTRIES, subject, after[0], after[1], limit)
        )

    async def violations(
        self,
        *,
        after_id: int,
        limit: int,
        status: str | None,
        subject: str | None,
        rule: str | None,
    ) -> list[Row]:
        """Violations with id above ``after_id`` matching the filters given, by id."""
        given = {"status": status, "subject": subject, "rule": rule}
        filters = frozenset(name for name, value in given.items() if value is not None)
        values = [given[name] for name in VIOLATION_FILTERS if name in filters]
        return list(
            await self._connection.fetch(VIOLATIONS_PAGE[filters], after_id, limit, *values)
        )

    async def violation_report(
        self, bucket: Bucket, group: ViolationGroup, span: TimeRange, limit: int
    ) -> list[ViolationCount]:
        """The first ``limit`` cells of the violations report (store/reports.py)."""
        return await reports.violation_report(self._connection, bucket, group, span, limit)

    async def disclosure_report(
        self, group: DisclosureGroup, span: TimeRange, limit: int
    ) -> list[DisclosureCount]:
        """The first ``limit`` groups of the disclosures report (store/reports.py)."""
        return await reports.disclosure_report(self._connection, group, span, limit)

    async def rejected(
        self, *, after_id: int, limit: int, raw_budget: int, text_chars: int
    ) -> list[Row]:
        """The next ``limit`` rejected records after ``after_id``, those that start
        within ``raw_budget`` bytes of raw records (see :data:`REJECTED_PAGE`)."""
        return list(
            await self._connection.fetch(REJECTED_PAGE, after_id, limit, raw_budget, text_chars)
        )

    async def position_totals(self, topic: str) -> Row:
        row: Row = await self._connection.fetchrow(POSITION_TOTALS, topic)
        return row

    async def next_offsets(self, topic: str) -> dict[int, int]:
        """The next offset the worker will read, per partition of ``topic``."""
        rows = await self._connection.fetch(NEXT_OFFSETS, topic)
        return {row["kafka_partition"]: row["next_offset"] for row in rows}

    async def batch_times(self, topic: str) -> list[Row]:
        """Per partition: batches committed, their summed processing seconds and
        how many fell in each slot of the latency histogram."""
        rows: list[Row] = await self._connection.fetch(BATCH_TIMES, topic)
        return rows

    async def row_counts(self) -> RowCounts:
        """Ledger entries by type, rejected records by reason and violations by
        rule, severity, clause and status, as kept (migration 021): no row counted."""
        return await kept_counts(self._connection)

    async def open_violations_by_clause(self) -> dict[str, int]:
        """How many violations are open now, per clause they break."""
        rows = await self._connection.fetch(OPEN_VIOLATIONS_BY_CLAUSE)
        return {row["clause"]: row["n"] for row in rows}

    async def outbox_health(self) -> OutboxHealth:
        return await outbox_health(self._connection)

    async def webhook_figures(self) -> list[HookFigures]:
        """Deliveries to each webhook by state (store/webhook_deliveries.py)."""
        return await figures_by_hook(self._connection)

    async def checkpoints(
        self, *, before_id: int, limit: int
    ) -> list[tuple[int, SignedCheckpoint]]:
        """Stored checkpoints with id below ``before_id``, newest first, with their ids.

        :class:`~consent_ledger.errors.LedgerInconsistent` when a stored document is
        not a valid signed checkpoint."""
        rows = await self._connection.fetch(CHECKPOINTS_PAGE, before_id, limit)
        return [(row["id"], audit_reads.stored_checkpoint(row["id"], row["document"]))
                for row in rows]  # fmt: skip

    async def checkpoint(self, checkpoint_id: int | None) -> tuple[int, SignedCheckpoint]:
        """A stored checkpoint by id, or the latest for None.

        :class:`~consent_ledger.errors.UnknownCheckpoint` when there is none;
        :class:`~consent_ledger.errors.LedgerInconsistent` when the stored document
        is not a valid signed checkpoint.
        """
        return await audit_reads.checkpoint(self._connection, checkpoint_id)

    async def inclusion_proof(self, event_id: str, checkpoint_id: int | None) -> dict[str, Any]:
        """The inclusion proof document (:mod:`consent_ledger.integrity.proofs`) of the
        entry against the checkpoint (the latest for None), with its ``checkpoint_id``.

        Raises what :func:`~consent_ledger.store.audit_reads.inclusion_proof_for` does.
        """
        return await audit_reads.inclusion_proof_for(self._connection, event_id, checkpoint_id)

    async def consistency_proof(self, old_id: int, new_id: int) -> dict[str, Any]:
        """The consistency proof document from checkpoint ``old_id`` to ``new_id``.

        Raises what :func:`~consent_ledger.store.audit_reads.consistency_proof_between`
        does.
        """
        return await audit_reads.consistency_proof_between(self._connection, old_id, new_id)

    async def policy_versions(self) -> list[PublishedVersion]:
        """Every published policy version, in publication order."""
        return await published_versions(self._connection)


HEAVY_READS: Final = 2
"""Requests at once that may read over the whole history (analyst reports,
what-if): a second or more each over millions of rows. The others wait for
their turn rather than take the pool's connections, which the API's quick
reads (a subject's consents, /healthz's ping, stats) then still find free."""


class LedgerReader:
    """Read access to the ledger's tables over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, heavy_reads: int = HEAVY_READS) -> None:
        self._pool = pool
        self._heavy = asyncio.Semaphore(heavy_reads)

    @asynccontextmanager
    async def snapshot(self, heavy: bool = False) -> AsyncIterator[LedgerView]:
        """A consistent, read-only view for the queries of one request; ``heavy``
        when they may read the whole history (at most HEAVY_READS at once)."""
        if heavy:
            async with self._heavy, self.snapshot() as view:
                yield view
            return
        async with (
            self._pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield LedgerView(connection)

    async def publish_policy(
        self, configured: PolicyVersions, text: str, publisher: str, source: str
    ) -> PublishedVersion:
        """Publish a policy version (:func:`~consent_ledger.store.policy_versions.publish_version`)."""
        async with self._pool.acquire() as connection:
            return await publish_version(connection, configured, text, publisher, source)

    async def whatif(self, configured: PolicyVersions, draft_of: Any, keyring: KeyRing) -> WhatIf:
        """What-if over the recorded history: the current set (``configured`` and the
        published versions) against ``draft_of(current)``, in a read-only snapshot;
        a heavy read (HEAVY_READS)."""
        async with self._heavy, self._pool.acquire() as connection:
            current = versions_with(configured, await published_versions(connection))
            return await whatif_recorded(
                connection, current, draft_of(current), sealed_data_opener(keyring)
            )

    async def ping(self) -> None:
        """Raise unless the database answers."""
        await self._pool.fetchval(PING)

    async def outbox_health(self) -> OutboxHealth:
        """How the outbox relay is doing (store/outbox.py), outside a snapshot."""
        async with self._pool.acquire() as connection:
            return await outbox_health(connection)
