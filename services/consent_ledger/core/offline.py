"""The whole ledger in memory, for ``consent-ledger check``: no broker, no database.

Runs the same intake and subject files as the stream worker, over the lines of
a file in order, and reports the open violations, the rejected lines and the
counts of CONTRACT §5.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from consent_ledger.core.facts import fact_of
from consent_ledger.core.intake import Admission, Rejection, admit, validate
from consent_ledger.core.policy import Policy
from consent_ledger.core.timeline import SubjectFile, Violation


@dataclass(frozen=True, slots=True)
class RejectedLine:
    line: int
    rejection: Rejection


@dataclass(slots=True)
class Counts:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


@dataclass(slots=True)
class OfflineLedger:
    """Accepts events one by one and keeps every subject's file in memory."""

    policy: Policy
    counts: Counts = field(default_factory=Counts)
    rejected: list[RejectedLine] = field(default_factory=list)
    _digests: dict[str, bytes] = field(default_factory=dict)
    _files: dict[str, SubjectFile] = field(default_factory=dict)

    def ingest(self, raw: bytes | str, line: int) -> None:
        """Validate, admit and judge one record; ``line`` is its 1-based position."""
        checked = validate(raw)
        if isinstance(checked, Rejection):
            self._reject(line, checked)
            return
        admission = admit(checked, self._digests.get(checked.id))
        if isinstance(admission, Rejection):
            self._reject(line, admission)
            return
        if admission is Admission.DUPLICATE:
            self.counts.duplicates += 1
            return
        self.counts.accepted += 1
        self._digests[checked.id] = checked.digest
        subject = self._files.get(checked.subject)
        if subject is None:
            subject = self._files[checked.subject] = SubjectFile(checked.subject)
        subject.record(fact_of(checked, seq=line), self.policy)

    def ingest_lines(self, lines: Iterable[bytes]) -> None:
        """Ingest every non-blank line, numbering lines from 1."""
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                self.ingest(raw, number)

    def _reject(self, line: int, rejection: Rejection) -> None:
        self.counts.rejected += 1
        self.rejected.append(RejectedLine(line, rejection))

    def open_violations(self) -> list[Violation]:
        """Open violations sorted by (event_id, rule)."""
        found = [
            violation
            for subject in self._files.values()
            for by_rule in subject.open.values()
            for violation in by_rule.values()
        ]
        return sorted(found, key=lambda violation: violation.key)
