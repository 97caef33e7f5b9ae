"""What-if over the recorded history (CONTRACT §9): every subject's file read
from the database, in chunks of subjects, in one read-only snapshot; judged
under the current versions and the draft by :mod:`consent_ledger.core.whatif`.
Writes nothing."""

from __future__ import annotations

from typing import Any

import asyncpg

from consent_ledger.core.policy import SINCE_ALWAYS, PolicyVersions
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
        for start in range(0, len(subjects), SUBJECTS_PER_READ):
            chunk = subjects[start : start + SUBJECTS_PER_READ]
            files, registrations = await load_subject_files(
                connection, chunk, SINCE_ALWAYS, open_sealed, with_open=False
            )
            judge_files(answer, files.values(), registrations, current, draft)
    return answer
