"""Load the subject files of a batch's subjects from PostgreSQL, in four queries."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from consent_ledger.core.facts import ConsentChange, Disclosure
from consent_ledger.core.timeline import SubjectFile, Violation
from consent_ledger.core.verdicts import Rule, Severity

CONSENTS = """
SELECT event_id, subject, occurred_us, seq, purpose, granted, expires_us
FROM consent_changes WHERE subject = ANY($1::text[])
ORDER BY subject, purpose, occurred_us, seq
"""
DISCLOSURES = """
SELECT event_id, subject, occurred_us, seq, purpose, subject_role, recipient_kind, recipient_id,
       data_categories, legal_basis_kind, legal_basis_reference
FROM disclosures WHERE subject = ANY($1::text[])
ORDER BY seq
"""
ERASURES = "SELECT subject, erased_us FROM erasures WHERE subject = ANY($1::text[])"
OPEN_VIOLATIONS = """
SELECT event_id, rule, subject, severity, clause, explanation, occurred_us
FROM violations WHERE subject = ANY($1::text[]) AND status = 'open'
"""


async def load_subject_files(
    connection: asyncpg.Connection, subjects: Sequence[str]
) -> dict[str, SubjectFile]:
    """The files of ``subjects`` that the ledger knows; unknown subjects are absent."""
    files: dict[str, SubjectFile] = {}

    def file_of(subject: str) -> SubjectFile:
        found = files.get(subject)
        if found is None:
            found = files[subject] = SubjectFile(subject)
        return found

    if not subjects:
        return files
    for row in await connection.fetch(CONSENTS, subjects):
        change = ConsentChange(
            row["event_id"], row["subject"], row["occurred_us"], row["seq"],
            row["purpose"], row["granted"], row["expires_us"],
        )  # fmt: skip
        file_of(change.subject).consents.setdefault(change.purpose, []).append(change)
    for row in await connection.fetch(DISCLOSURES, subjects):
        shared = Disclosure(
            row["event_id"], row["subject"], row["occurred_us"], row["seq"], row["purpose"],
            row["subject_role"], row["recipient_kind"], row["recipient_id"],
            tuple(row["data_categories"]), row["legal_basis_kind"], row["legal_basis_reference"],
        )  # fmt: skip
        file_of(shared.subject).disclosures.setdefault(shared.purpose, []).append(shared)
    for row in await connection.fetch(ERASURES, subjects):
        file_of(row["subject"]).erased_at = row["erased_us"]
    for row in await connection.fetch(OPEN_VIOLATIONS, subjects):
        rule = Rule(row["rule"])
        violation = Violation(
            row["event_id"], rule, row["subject"], Severity(row["severity"]),
            row["clause"], row["explanation"], row["occurred_us"],
        )  # fmt: skip
        file_of(violation.subject).open.setdefault(violation.event_id, {})[rule] = violation
    return files
