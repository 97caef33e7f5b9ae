"""What a draft policy would change (CONTRACT §9), without changing anything.

The recorded history is judged twice, under the current versions and under the
draft, with the same code that judges the stream (:class:`SubjectFile`); the
answer is the difference of the two sets of open violations:
``would_open`` is open under the draft and not under the current policy,
``would_close`` the reverse, each counted by rule, clause and recipient, with
examples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from consent_ledger.core.facts import Disclosure, VisitorRegistration
from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import SINCE_ALWAYS, PolicyVersions
from consent_ledger.core.timeline import SubjectFile, Violation

EXAMPLES = 5  # violations shown per direction in the answer
NO_RECIPIENT = "(none: a visitor registration, or an erased subject's disclosure)"


@dataclass(slots=True)
class WhatIf:
    """The open violations under the current versions and under the draft."""

    current: dict[tuple[str, str], Violation] = field(default_factory=dict)
    draft: dict[tuple[str, str], Violation] = field(default_factory=dict)
    recipients: dict[str, str] = field(default_factory=dict)  # event id: "kind:id"

    def add(self, current: Iterable[Violation], draft: Iterable[Violation]) -> None:
        self.current.update((violation.key, violation) for violation in current)
        self.draft.update((violation.key, violation) for violation in draft)

    @property
    def would_open(self) -> list[Violation]:
        return sorted((v for key, v in self.draft.items() if key not in self.current), key=_order)

    @property
    def would_close(self) -> list[Violation]:
        return sorted((v for key, v in self.current.items() if key not in self.draft), key=_order)

    def document(self, examples: int = EXAMPLES) -> dict[str, Any]:
        """The ``--json`` shape of CONTRACT §9."""
        would_open, would_close = self.would_open, self.would_close
        return {
            "would_open": [_key(v) for v in would_open],
            "would_close": [_key(v) for v in would_close],
            "counts": {
                "would_open": len(would_open),
                "would_close": len(would_close),
                "open_now": len(self.current),
                "open_under_draft": len(self.draft),
                "by_rule": self._counts(would_open, would_close, lambda v: str(v.rule)),
                "by_clause": self._counts(would_open, would_close, lambda v: v.clause),
                "by_recipient": self._counts(
                    would_open, would_close, lambda v: self.recipients.get(v.event_id, NO_RECIPIENT)
                ),
            },
            "examples": {
                "would_open": [v.to_document() for v in would_open[:examples]],
                "would_close": [v.to_document() for v in would_close[:examples]],
            },
        }

    @staticmethod
    def _counts(
        would_open: list[Violation], would_close: list[Violation], group: Any
    ) -> dict[str, dict[str, int]]:
        opened = Counter(group(v) for v in would_open)
        closed = Counter(group(v) for v in would_close)
        return {
            name: {"would_open": opened[name], "would_close": closed[name]}
            for name in sorted(opened.keys() | closed.keys())
        }


def _order(violation: Violation) -> tuple[str, str]:
    return violation.key


def _key(violation: Violation) -> dict[str, str]:
    return {"event_id": violation.event_id, "rule": str(violation.rule)}


def with_draft(current: PolicyVersions, draft: PolicyVersions, *, folder: bool) -> PolicyVersions:
    """The set a draft asks to judge under. A folder of versions is the whole set;
    a single draft with ``effective_from`` joins the current versions from then
    on (in place of a current version with its ``version`` or its start); one
    without replaces the policy."""
    if folder or len(draft) > 1:
        return draft
    (policy,) = draft.versions
    if policy.effective_from is None:
        return draft
    kept = [
        version
        for version in current.versions
        if version.version != policy.version and version.effective_from != policy.effective_from
    ]
    return PolicyVersions((*kept, policy))


def whatif_lines(lines: Iterable[bytes], current: PolicyVersions, draft: PolicyVersions) -> WhatIf:
    """A JSON Lines history judged under ``current`` and ``draft`` (as ``check``
    would, twice)."""
    ledgers = OfflineLedger(current), OfflineLedger(draft)
    for number, line in enumerate(lines, start=1):
        for ledger in ledgers:
            ledger.ingest(line, number)
    answer = WhatIf()
    answer.add(ledgers[0].open_violations(), ledgers[1].open_violations())
    for file in ledgers[0].files.values():
        answer.recipients.update(_recipients(file))
    return answer


def judge_files(
    answer: WhatIf,
    files: Iterable[SubjectFile],
    registrations: Mapping[str, list[VisitorRegistration]],
    current: PolicyVersions,
    draft: PolicyVersions,
) -> None:
    """Judge recorded subject files (consents and disclosures, nothing open yet)
    under both sets, from scratch, and add what is open to ``answer``. The files
    are judged twice on copies: the caller's stay as they were."""
    for file in files:
        answer.recipients.update(_recipients(file))
        found = registrations.get(file.subject, [])
        for versions, into in ((current, answer.current), (draft, answer.draft)):
            judged = SubjectFile(file.subject, file.consents, file.disclosures, file.erased_at)
            judged.rejudge_since(SINCE_ALWAYS, versions, found)
            into.update(
                (violation.key, violation)
                for same_event in judged.open.values()
                for violation in same_event.values()
            )


def _recipients(file: SubjectFile) -> Iterable[tuple[str, str]]:
    shared: Disclosure
    for same_purpose in file.disclosures.values():
        for shared in same_purpose:
            yield shared.event_id, f"{shared.recipient_kind}:{shared.recipient_id}"
