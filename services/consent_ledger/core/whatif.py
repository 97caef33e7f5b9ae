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
from consent_ledger.core.policy import Policy, PolicyVersions
from consent_ledger.core.timeline import SubjectFile, Violation
from consent_ledger.core.verdicts import Breach, judge_disclosure, judge_visitor

EXAMPLES = 5  # violations shown per direction in the answer
NO_RECIPIENT = "(none: a visitor registration, or an erased subject's disclosure)"


@dataclass(slots=True)
class WhatIf:
    """What differs between the open violations under the current versions and
    under the draft, and how many are open under each."""

    opened: dict[tuple[str, str], Violation] = field(default_factory=dict)
    closed: dict[tuple[str, str], Violation] = field(default_factory=dict)
    open_now: int = 0
    open_under_draft: int = 0
    recipients: dict[str, str] = field(default_factory=dict)  # event id: "kind:id"

    def add(self, current: Iterable[Violation], draft: Iterable[Violation]) -> None:
        """Two whole sets of open violations, compared."""
        now = {violation.key: violation for violation in current}
        under_draft = {violation.key: violation for violation in draft}
        self.open_now += len(now)
        self.open_under_draft += len(under_draft)
        self.opened.update((k, v) for k, v in under_draft.items() if k not in now)
        self.closed.update((k, v) for k, v in now.items() if k not in under_draft)

    @property
    def would_open(self) -> list[Violation]:
        return sorted(self.opened.values(), key=_order)

    @property
    def would_close(self) -> list[Violation]:
        return sorted(self.closed.values(), key=_order)

    def document(self, examples: int = EXAMPLES) -> dict[str, Any]:
        """The ``--json`` shape of CONTRACT §9."""
        would_open, would_close = self.would_open, self.would_close
        return {
            "would_open": [_key(v) for v in would_open],
            "would_close": [_key(v) for v in would_close],
            "counts": {
                "would_open": len(would_open),
                "would_close": len(would_close),
                "open_now": self.open_now,
                "open_under_draft": self.open_under_draft,
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
    """Judge recorded subject files (consent timelines and disclosures, never
    erased) under both sets and add what differs to ``answer``. An event that
    both sets judge under the same version cannot differ: it is judged once,
    for the counts; a breach is made a :class:`Violation` only where the two
    differ."""
    for file in files:
        for same_purpose in file.disclosures.values():
            timeline = file.consents.get(same_purpose[0].purpose, []) if same_purpose else []
            for shared in same_purpose:
                now = current.in_force_at(shared.instant)
                breaches = judge_disclosure(now, shared, timeline, None)
                answer.open_now += len(breaches)
                under_draft = draft.in_force_at(shared.instant)
                if under_draft is now:
                    answer.open_under_draft += len(breaches)
                    continue
                drafted = judge_disclosure(under_draft, shared, timeline, None)
                answer.open_under_draft += len(drafted)
                if _differ(answer, breaches, drafted, shared.event_id, file.subject,
                           shared.instant, now, under_draft):  # fmt: skip
                    answer.recipients[shared.event_id] = (
                        f"{shared.recipient_kind}:{shared.recipient_id}"
                    )
        for visit in registrations.get(file.subject, ()):
            now = current.in_force_at(visit.instant)
            breaches = judge_visitor(now, visit)
            answer.open_now += len(breaches)
            under_draft = draft.in_force_at(visit.instant)
            drafted = breaches if under_draft is now else judge_visitor(under_draft, visit)
            answer.open_under_draft += len(drafted)
            if under_draft is not now:
                _differ(answer, breaches, drafted, visit.event_id, file.subject, visit.instant,
                        now, under_draft)  # fmt: skip


def _differ(
    answer: WhatIf,
    breaches: list[Breach],
    drafted: list[Breach],
    event_id: str,
    subject: str,
    instant: int,
    now: Policy,
    under_draft: Policy,
) -> bool:
    """Add the breaches found under only one of the two; True when there were any."""
    rules_now = {breach.rule for breach in breaches}
    rules_drafted = {breach.rule for breach in drafted}
    if rules_now == rules_drafted:
        return False
    for found, other, policy, into in (
        (drafted, rules_now, under_draft, answer.opened),
        (breaches, rules_drafted, now, answer.closed),
    ):
        for breach in found:
            if breach.rule not in other:
                violation = Violation(
                    event_id, breach.rule, subject, breach.severity, breach.clause,
                    breach.explanation, instant, policy.version,
                )  # fmt: skip
                into[violation.key] = violation
    return True


def _recipients(file: SubjectFile) -> Iterable[tuple[str, str]]:
    shared: Disclosure
    for same_purpose in file.disclosures.values():
        for shared in same_purpose:
            yield shared.event_id, f"{shared.recipient_kind}:{shared.recipient_id}"
