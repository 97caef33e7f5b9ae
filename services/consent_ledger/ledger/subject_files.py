"""Load the subject files of a batch's subjects from PostgreSQL, in four queries."""

from __future__ import annotations

import asyncpg

from consent_ledger.core.batch import BatchNeeds
from consent_ledger.core.facts import ConsentChange, Disclosure
from consent_ledger.core.timeline import SubjectFile, Violation
from consent_ledger.core.verdicts import Rule, Severity
from consent_ledger.ledger.sql import as_columns

# Each query joins the batch's keys as a table, so that the plan stays a
# nested loop over the subject indexes however large the tables grow (a
# generic plan for `subject = ANY($1)` may scan the whole table instead).
CONSENTS = """
SELECT c.event_id, c.subject, c.occurred_us, c.seq, c.purpose, c.granted, c.expires_us
FROM unnest($1::text[], $2::text[]) AS batch(subject, purpose)
JOIN consent_changes c ON c.subject = batch.subject AND c.purpose = batch.purpose
ORDER BY c.subject, c.purpose, c.occurred_us, c.seq
"""
# A disclosure can match two keys of the batch (one purpose, and an erasure's
# "any purpose"); the loader keeps it once.
DISCLOSURES = """
SELECT d.event_id, d.subject, d.occurred_us, d.seq, d.purpose, d.subject_role, d.recipient_kind,
       d.recipient_id, d.data_categories, d.legal_basis_kind, d.legal_basis_reference
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS batch(subject, purpose, since)
JOIN disclosures d ON d.subject = batch.subject AND d.occurred_us >= batch.since
    AND (batch.purpose IS NULL OR d.purpose = batch.purpose)
ORDER BY d.seq
"""
ERASURES = """
SELECT e.subject, e.erased_us
FROM unnest($1::text[]) AS batch(subject) JOIN erasures e ON e.subject = batch.subject
"""
OPEN_VIOLATIONS = """
SELECT v.event_id, v.rule, v.subject, v.severity, v.clause, v.explanation, v.occurred_us
FROM unnest($1::text[]) AS batch(subject)
JOIN violations v ON v.subject = batch.subject AND v.status = 'open'
"""


async def load_subject_files(
    connection: asyncpg.Connection, needs: BatchNeeds
) -> dict[str, SubjectFile]:
    """What the ledger knows of the batch's subjects, as far as the batch needs it
    (see :class:`BatchNeeds`); subjects it knows nothing of are absent."""
    files: dict[str, SubjectFile] = {}

    def file_of(subject: str) -> SubjectFile:
        found = files.get(subject)
        if found is None:
            found = files[subject] = SubjectFile(subject)
        return found

    if not needs.subjects:
        return files
    subjects, purposes = as_columns(needs.timelines, 2)
    for row in await connection.fetch(CONSENTS, subjects, purposes):
        change = ConsentChange(
            row["event_id"], row["subject"], row["occurred_us"], row["seq"],
            row["purpose"], row["granted"], row["expires_us"],
        )  # fmt: skip
        file_of(change.subject).consents.setdefault(change.purpose, []).append(change)
    loaded: set[str] = set()
    for row in await connection.fetch(DISCLOSURES, *as_columns(needs.rejudge_from, 3)):
        if row["event_id"] in loaded:
            continue
        loaded.add(row["event_id"])
        shared = Disclosure(
            row["event_id"], row["subject"], row["occurred_us"], row["seq"], row["purpose"],
            row["subject_role"], row["recipient_kind"], row["recipient_id"],
            tuple(row["data_categories"]), row["legal_basis_kind"], row["legal_basis_reference"],
        )  # fmt: skip
        file_of(shared.subject).disclosures.setdefault(shared.purpose, []).append(shared)
    for row in await connection.fetch(ERASURES, needs.subjects):
        file_of(row["subject"]).erased_at = row["erased_us"]
    for row in await connection.fetch(OPEN_VIOLATIONS, needs.rejudged):
        rule = Rule(row["rule"])
        violation = Violation(
            row["event_id"], rule, row["subject"], Severity(row["severity"]),
            row["clause"], row["explanation"], row["occurred_us"],
        )  # fmt: skip
        file_of(violation.subject).open.setdefault(violation.event_id, {})[rule] = violation
    return files
