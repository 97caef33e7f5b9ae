"""The subject report's own reads (CONTRACT §8): a subject's disclosures, and the
sealed payloads of its consent, disclosure and visitor registration entries.

The report reads the rest through what other endpoints read already (the
erasure, consent changes, violations, the subject key, the latest checkpoint:
:class:`~consent_ledger.store.api_reads.LedgerView`), in the same snapshot.
The payloads are read because the read models leave out what Art. 15 asks
for: the recipient's name, the notice a consent was given under; and visitor
registrations have no read model of their own.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import asyncpg

from consent_ledger.core.subject_report import RecordedDisclosure
from consent_ledger.core.vocabulary import (
    CONSENT_GIVEN,
    CONSENT_WITHDRAWN,
    DATA_SHARED,
    VISITOR_REGISTERED,
)

SUBJECT_DISCLOSURES: Final = """
SELECT event_id, purpose, occurred_us, controller, recipient_kind, recipient_id,
       data_categories, legal_basis_kind, legal_basis_reference
FROM disclosures WHERE subject = $1
ORDER BY occurred_us, seq
"""

# ledger_entries_subject (subject, occurred_us, seq) finds them.
SUBJECT_PAYLOADS: Final = """
SELECT event_id, type, occurred_us, payload FROM ledger_entries
WHERE subject = $1 AND type = ANY($2::text[])
ORDER BY occurred_us, seq
"""

REPORTED_TYPES: Final = (CONSENT_GIVEN, CONSENT_WITHDRAWN, DATA_SHARED, VISITOR_REGISTERED)


class SealedEntry(NamedTuple):
    """One of the subject's ledger entries, its payload still sealed."""

    event_id: str
    type: str
    instant: int  # event time
    payload: bytes


async def subject_disclosures(
    connection: asyncpg.Connection, subject: str
) -> list[RecordedDisclosure]:
    """Every disclosure of ``subject`` the read model holds, in event-time order."""
    rows = await connection.fetch(SUBJECT_DISCLOSURES, subject)
    return [
        RecordedDisclosure(
            event_id=row["event_id"],
            purpose=row["purpose"],
            instant=row["occurred_us"],
            controller=row["controller"],
            recipient_kind=row["recipient_kind"],
            recipient_id=row["recipient_id"],
            data_categories=tuple(row["data_categories"]),
            legal_basis_kind=row["legal_basis_kind"],
            legal_basis_reference=row["legal_basis_reference"],
        )
        for row in rows
    ]


async def subject_payloads(connection: asyncpg.Connection, subject: str) -> list[SealedEntry]:
    """The subject's consent, disclosure and visitor registration entries, in
    event-time order, their payloads sealed."""
    rows = await connection.fetch(SUBJECT_PAYLOADS, subject, list(REPORTED_TYPES))
    return [
        SealedEntry(row["event_id"], row["type"], row["occurred_us"], row["payload"])
        for row in rows
    ]
