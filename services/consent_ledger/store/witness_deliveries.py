"""The witness courier's statements: lease the oldest undelivered checkpoint of a
witness, record that it was taken, or that it failed and when to try again.

Rows are staged by :mod:`.checkpoint_copies`; the table is migration 017.
"""

from __future__ import annotations

from typing import NamedTuple

import asyncpg

from consent_ledger.errors import LedgerInconsistent
from consent_ledger.integrity.checkpoints import SignedCheckpoint
from consent_ledger.store.audit_reads import stored_checkpoint

# The oldest undelivered row of a URL only, and only once it is due: a witness
# gets its checkpoints in issue order, and one that fails holds back its own
# later ones, no one else's. FOR UPDATE (not SKIP LOCKED): a second worker
# waits for the first's lease, then finds the row not due.
LEASE_OLDEST = """
WITH oldest AS (
    SELECT checkpoint_id FROM witness_deliveries
    WHERE witness_url = $1 AND delivered_at IS NULL
    ORDER BY checkpoint_id LIMIT 1 FOR UPDATE
)
UPDATE witness_deliveries AS d
SET next_attempt_at = now() + make_interval(secs => $2), attempts = d.attempts + 1
FROM oldest, checkpoints AS c
WHERE d.witness_url = $1 AND d.checkpoint_id = oldest.checkpoint_id
  AND c.id = d.checkpoint_id AND d.next_attempt_at <= now()
RETURNING d.checkpoint_id, d.attempts, c.document
"""
DELIVERED = """
UPDATE witness_deliveries SET delivered_at = now(), last_error = NULL
WHERE witness_url = $1 AND checkpoint_id = $2
"""
FAILED = """
UPDATE witness_deliveries SET next_attempt_at = now() + make_interval(secs => $3), last_error = $4
WHERE witness_url = $1 AND checkpoint_id = $2 AND delivered_at IS NULL
"""


class LeasedDelivery(NamedTuple):
    """A checkpoint leased for one POST to one witness.

    ``signed`` is None when the stored document no longer parses (``problem``
    says why): a failed delivery, never a crash."""

    checkpoint_id: int
    attempts: int  # this one included
    signed: SignedCheckpoint | None
    problem: str | None = None


async def lease_oldest(
    connection: asyncpg.Connection, witness_url: str, lease_s: float
) -> LeasedDelivery | None:
    """Lease the oldest undelivered checkpoint of ``witness_url`` for ``lease_s``
    seconds, if it is due; None when nothing is."""
    row = await connection.fetchrow(LEASE_OLDEST, witness_url, lease_s)
    if row is None:
        return None
    number, attempts = row["checkpoint_id"], row["attempts"]
    try:
        return LeasedDelivery(number, attempts, stored_checkpoint(number, row["document"]))
    except LedgerInconsistent as exc:  # an altered row: `verify` will say more
        return LeasedDelivery(number, attempts, None, str(exc))


async def mark_delivered(connection: asyncpg.Connection, witness_url: str, number: int) -> None:
    await connection.execute(DELIVERED, witness_url, number)


async def mark_failed(
    connection: asyncpg.Connection, witness_url: str, number: int, retry_in_s: float, error: str
) -> None:
    """Record the failure; the row is due again ``retry_in_s`` seconds from now."""
    await connection.execute(FAILED, witness_url, number, retry_in_s, error)
