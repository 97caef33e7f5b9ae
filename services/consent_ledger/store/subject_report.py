"""The subject report's own reads (CONTRACT §8): a subject's disclosures, and the
sealed payloads of its consent and disclosure entries.

The report reads the rest through what other endpoints read already (the
erasure, consent changes, violations, the subject key, the latest checkpoint:
:class:`~consent_ledger.store.api_reads.LedgerView`), in the same snapshot.
The payloads are read because the read models leave out what Art. 15 asks
for: the recipient's name, the notice a consent was given under.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from consent_ledger.core.subject_report import RecordedDisclosure
from consent_ledger.core.vocabulary import CONSENT_GIVEN, CONSENT_WITHDRAWN, DATA_SHARED

SUBJECT_DISCLOSURES: Final = """
SELECT event_id, purpose, occurred_us, controller, recipient_kind, recipient_id,
       data_categories, legal_basis_kind, legal_basis_reference
FROM disclosures WHERE subject = $1
ORDER BY occurred_us, seq
"""

# ledger_entries_subject (subject, occurred_us, seq) finds them.
SUBJECT_PAYLOADS: Final = """
SELECT event_id, payload FROM ledger_entries
WHERE subject = $1 AND type = ANY($2::text[])
"""

REPORTED_TYPES: Final = (CONSENT_GIVEN, CONSENT_WITHDRAWN, DATA_SHARED)


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


async def subject_payloads(connection: asyncpg.Connection, subject: str) -> dict[str, bytes]:
    """The sealed payloads of the subject's consent and disclosure entries, by event id."""
    rows = await connection.fetch(SUBJECT_PAYLOADS, subject, list(REPORTED_TYPES))
    return {row["event_id"]: row["payload"] for row in rows}
