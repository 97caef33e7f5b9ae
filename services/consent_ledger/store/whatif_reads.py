"""What-if over the recorded history (CONTRACT §9): every subject's file read
from the database, in chunks of subjects, in one read-only snapshot; judged
under the current versions and the draft by :mod:`consent_ledger.core.whatif`.
Writes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from consent_ledger.core.facts import VisitorRegistration
from consent_ledger.core.policy import SINCE_ALWAYS, PolicyVersions
from consent_ledger.core.timeline import SubjectFile
from consent_ledger.core.whatif import WhatIf, judge_files
from consent_ledger.store.policy_versions import load_subject_files

# Every subject with a disclosure or a visitor registration, never erased (an
# erased subject's facts are gone and its verdicts stay whatever the policy).
JUDGED_SUBJECTS = """
SELECT subject FROM (
    SELECT subject FROM disclosures
    UNION
    SELECT subject FROM ledger_entries WHERE type = 'VisitorRegistered'
) s WHERE NOT EXISTS (SELECT 1 FROM erasures e WHERE e.subject = s.subject)
ORDER BY subject
"""
SUBJECTS_PER_READ = 5_000


async def whatif_recorded(
    connection: asyncpg.Connection,
    current: PolicyVersions,
    draft: PolicyVersions,
    open_sealed: Any,
) -> WhatIf:
    """The recorded history judged under ``current`` and ``draft``, in one
    read-only snapshot; ``open_sealed`` as for re-judging (visitor registrations)."""
    answer = WhatIf()
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        subjects = [row[0] for row in await connection.fetch(JUDGED_SUBJECTS)]
        chunks = [
            subjects[start : start + SUBJECTS_PER_READ]
            for start in range(0, len(subjects), SUBJECTS_PER_READ)
        ]
        # The next chunk's read is sent before this one is judged: PostgreSQL
        # runs it on the other core meanwhile (bench/RESULTS.md: 13-20 % less time).
        reading = (
            asyncio.ensure_future(_read(connection, chunks[0], open_sealed)) if chunks else None
        )
        for number in range(len(chunks)):
            assert reading is not None
            files, registrations = await reading
            reading = (
                asyncio.ensure_future(_read(connection, chunks[number + 1], open_sealed))
                if number + 1 < len(chunks)
                else None
            )
            await asyncio.sleep(0)  # let the read go out before judging holds the loop
            judge_files(answer, files.values(), registrations, current, draft)
    return answer


async def _read(
    connection: asyncpg.Connection, subjects: list[str], open_sealed: Any
) -> tuple[dict[str, SubjectFile], dict[str, list[VisitorRegistration]]]:
    return await load_subject_files(
        connection, subjects, SINCE_ALWAYS, open_sealed, with_open=False
    )
