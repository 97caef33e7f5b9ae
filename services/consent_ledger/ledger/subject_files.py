"""Load the subject files of a batch's subjects from PostgreSQL, in four queries."""

from __future__ import annotations

import asyncpg

from consent_ledger.core.batch import BatchNeeds
from consent_ledger.core.facts import ConsentChange, Disclosure
from consent_ledger.core.timeline import SubjectFile, Violation
from consent_ledger.core.verdicts import Rule, Severity
from consent_ledger.ledger.sql import as_columns

# Each query looks the batch's keys up one by one, through the index, in a
# LATERAL subquery that `OFFSET 0` keeps the planner from flattening into a
# join. A join lets the planner pick a hash join over the whole table when
# its statistics are stale, as they are on tables growing by thousands of rows
# a second between autovacuum's analyses: measured, the open-violations lookup
# then read every open violation for every batch, and a batch's load grew
# from 15 to 60 ms within 40,000 events.
CONSENTS = """
SELECT c.* FROM unnest($1::text[], $2::text[]) AS batch(subject, purpose)
CROSS JOIN LATERAL (
    SELECT event_id, subject, occurred_us, seq, purpose, granted, expires_us FROM consent_changes
    WHERE subject = batch.subject AND purpose = batch.purpose OFFSET 0
) c
ORDER BY c.subject, c.purpose, c.occurred_us, c.seq
"""
# A disclosure can match two keys of the batch (one purpose, and an erasure's
# "any purpose"); the loader keeps it once.
DISCLOSURES = """
SELECT d.* FROM unnest($1::text[], $2::text[], $3::bigint[]) AS batch(subject, purpose, since)
CROSS JOIN LATERAL (
    SELECT event_id, subject, occurred_us, seq, purpose, subject_role, recipient_kind,
           recipient_id, data_categories, legal_basis_kind, legal_basis_reference
    FROM disclosures
    WHERE subject = batch.subject AND occurred_us >= batch.since
      AND (batch.purpose IS NULL OR purpose = batch.purpose)
    OFFSET 0
) d
ORDER BY d.seq
"""
ERASURES = """
SELECT e.* FROM unnest($1::text[]) AS batch(subject)
CROSS JOIN LATERAL (
    SELECT subject, erased_us FROM erasures WHERE subject = batch.subject OFFSET 0
) e
"""
OPEN_VIOLATIONS = """
SELECT v.* FROM unnest($1::text[]) AS batch(subject)
CROSS JOIN LATERAL (
    SELECT event_id, rule, subject, severity, clause, explanation, occurred_us FROM violations
    WHERE subject = batch.subject AND status = 'open' OFFSET 0
) v
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
