"""The subject access report (GDPR Art. 15, CONTRACT §8): what the ledger holds
about one subject, assembled from its read models.

Art. 15 gives a data subject the right to know the purposes, the categories of
data and "the recipients ... to whom the personal data have been or will be
disclosed"; the CJEU (C-154/21, Österreichische Post) read that as the
recipients themselves, not only their categories. So every disclosure names
its recipient (kind, id, and the name when the event carried one), beside the
consents the subject gave and withdrew, the verdict on each disclosure and the
violations about the subject. An erased subject's report says only that it was
erased and when: the ledger can no longer read its personal data, and the
report must not show what is left in clear (its violations' rules and times).

Pure: the adapters read the rows and open the sealed payloads; this module
decides what the report says. ``subject_report_html`` renders it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple

from consent_ledger.core.consent_records import RecordedConsentChange
from consent_ledger.core.policy import DISPLAY_LANGUAGE, PolicyVersions

Verdict = Literal["allowed", "violation"]
ALLOWED: Final = "allowed"
VIOLATION: Final = "violation"


class Clause(NamedTuple):
    """A clause of the privacy statement: its id in the policy and, where the
    policy gives them, its title in the statement's words."""

    id: str
    title: str | None = None


class RecordedDisclosure(NamedTuple):
    """A disclosure as the read model ``disclosures`` keeps it."""

    event_id: str
    purpose: str
    instant: int
    controller: str
    recipient_kind: str
    recipient_id: str
    data_categories: tuple[str, ...]
    legal_basis_kind: str | None
    legal_basis_reference: str | None


class RecordedViolation(NamedTuple):
    """A violation about the subject as the read model ``violations`` keeps it."""

    event_id: str
    rule: str
    severity: str
    status: str  # open | retracted
    clause: str
    explanation: str
    instant: int  # the violating event's time
    detected_at: int
    policy_version: str | None


class ClauseWords(NamedTuple):
    """A clause the report names, in the privacy statement's own words."""

    id: str
    title: str
    language: str  # of ``text``: English where the statement has it
    text: str | None


class Notice(NamedTuple):
    """The privacy notice a consent was given under."""

    id: str | None
    version: str | None


class ConsentEntry(NamedTuple):
    event_id: str
    action: Literal["given", "withdrawn"]
    instant: int
    purpose: str
    clause: Clause | None  # None: a purpose the policy in force then does not know
    controller: str
    channel: str | None
    notice: Notice | None
    expires_at: int | None
    reason: str | None  # a withdrawal's, when given


class Recipient(NamedTuple):
    kind: str
    id: str
    name: str | None


class ViolationEntry(NamedTuple):
    event_id: str
    rule: str
    clause: Clause
    severity: str
    status: str
    explanation: str
    instant: int
    detected_at: int
    policy_version: str | None


class DisclosureEntry(NamedTuple):
    event_id: str
    instant: int
    purpose: str
    clause: Clause | None
    controller: str
    recipient: Recipient
    data_categories: tuple[str, ...]
    legal_basis_kind: str | None
    legal_basis_reference: str | None
    violations: tuple[ViolationEntry, ...]  # open and retracted, about this disclosure

    @property
    def verdict(self) -> Verdict:
        """``violation`` while one of its violations is open; a retracted one
        (a late consent cleared it) leaves it ``allowed``."""
        return VIOLATION if any(v.status == "open" for v in self.violations) else ALLOWED


class TreeHead(NamedTuple):
    partition: int
    size: int
    root: str  # base64, as the checkpoint's JSON writes it


class LatestCheckpoint(NamedTuple):
    """The ledger's latest signed checkpoint when the report was made: what a
    reader holds the ledger to later (``verify --trusted-checkpoint``)."""

    id: int
    log_id: str
    issued_at: str  # RFC 3339, as signed
    key_id: str
    tree_heads: tuple[TreeHead, ...]
    document: Mapping[str, Any]  # {"id", "checkpoint"}: a trusted-checkpoint file's content

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> LatestCheckpoint:
        """From ``{"id": N, "checkpoint": <signed checkpoint JSON>}``, the shape of
        ``GET /v1/ledger/checkpoints/latest`` and of ``checkpoint save``'s files."""
        signed = document["checkpoint"]
        return cls(
            id=document["id"],
            log_id=signed["log_id"],
            issued_at=signed["issued_at"],
            key_id=signed["key_id"],
            tree_heads=tuple(
                TreeHead(head["partition"], head["size"], head["root"])
                for head in signed["tree_heads"]
            ),
            document=document,
        )


class VisitEntry(NamedTuple):
    """A registration in the visitor system of one of the premises."""

    event_id: str
    instant: int
    site: str | None
    rights_notice: str | None  # the notice of the visitor's rights shown, if any
    clause: Clause  # the policy's visitors clause
    violations: tuple[ViolationEntry, ...]

    @property
    def verdict(self) -> Verdict:
        return VIOLATION if any(v.status == "open" for v in self.violations) else ALLOWED


class SubjectReport(NamedTuple):
    """Everything the report says. For an erased subject only ``subject``,
    ``erased_at``, ``generated_at`` and ``checkpoint`` are filled."""

    subject: str
    generated_at: int  # microseconds since the epoch, UTC
    erased_at: int | None
    consents: tuple[ConsentEntry, ...]
    disclosures: tuple[DisclosureEntry, ...]
    violations: tuple[ViolationEntry, ...]
    checkpoint: LatestCheckpoint | None  # None: no checkpoint signed yet
    clauses: tuple[ClauseWords, ...] = ()  # those named above that the policy words
    visits: tuple[VisitEntry, ...] = ()

    @property
    def erased(self) -> bool:
        return self.erased_at is not None

    @property
    def open_violations(self) -> int:
        return sum(1 for violation in self.violations if violation.status == "open")


def erased_report(
    subject: str,
    erased_at: int,
    generated_at: int,
    checkpoint: LatestCheckpoint | None,
) -> SubjectReport:
    """The report of an erased subject: that it was erased, and when."""
    return SubjectReport(subject, generated_at, erased_at, (), (), (), checkpoint)


def subject_report(
    subject: str,
    *,
    generated_at: int,
    consents: Iterable[RecordedConsentChange],
    disclosures: Iterable[RecordedDisclosure],
    visits: Iterable[tuple[str, int]],
    violations: Iterable[RecordedViolation],
    event_data: Mapping[str, Mapping[str, Any] | None],
    policies: PolicyVersions,
    checkpoint: LatestCheckpoint | None,
) -> SubjectReport:
    """The report of a subject not erased, each part in event-time order.

    ``event_data`` maps an event id to the ``data`` of its decrypted ledger
    entry (None where it did not open): what the read models leave out, the
    notice of a consent, the recipient's name, a withdrawal's reason, and the
    whole of a visitor registration (``visits``: its event id and time). A clause
    is titled in the words of the version that judged it: for a purpose the
    version in force at the event's time, for a violation the one it names.
    """
    found = tuple(
        sorted(
            (_violation(row, policies) for row in violations),
            key=lambda v: (v.instant, v.event_id, v.rule),
        )
    )
    by_event: defaultdict[str, list[ViolationEntry]] = defaultdict(list)
    for violation in found:
        by_event[violation.event_id].append(violation)
    consent_entries = tuple(
        _consent(row, event_data.get(row.event_id), policies)
        for row in sorted(consents, key=lambda row: (row.instant, row.event_id))
    )
    disclosure_entries = tuple(
        _disclosure(row, event_data.get(row.event_id), policies, by_event)
        for row in sorted(disclosures, key=lambda row: (row.instant, row.event_id))
    )
    visit_entries = tuple(
        _visit(event_id, instant, event_data.get(event_id), policies, by_event)
        for event_id, instant in sorted(visits, key=lambda visit: (visit[1], visit[0]))
    )
    named: list[Clause | None] = [entry.clause for entry in consent_entries]
    named += [entry.clause for entry in disclosure_entries]
    named += [entry.clause for entry in visit_entries]
    named += [violation.clause for violation in found]
    return SubjectReport(
        subject=subject,
        generated_at=generated_at,
        erased_at=None,
        consents=consent_entries,
        disclosures=disclosure_entries,
        violations=found,
        checkpoint=checkpoint,
        clauses=_clause_words(policies, (clause.id for clause in named if clause is not None)),
        visits=visit_entries,
    )


def _clause_words(policies: PolicyVersions, ids: Iterable[str]) -> tuple[ClauseWords, ...]:
    """The words of each clause id, once, in the order first named, from the latest
    version that gives them; ids no version words are left out."""
    words = []
    for clause_id in dict.fromkeys(ids):
        clause = next(
            (found for p in reversed(policies.versions) if (found := p.clause(clause_id))), None
        )
        if clause is None:
            continue
        language = (
            DISPLAY_LANGUAGE
            if DISPLAY_LANGUAGE in clause.text
            else next(iter(clause.text), DISPLAY_LANGUAGE)
        )
        words.append(
            ClauseWords(clause_id, clause.display_title, language, clause.text.get(language))
        )
    return tuple(words)


def _purpose_clause(policies: PolicyVersions, purpose: str, instant: int) -> Clause | None:
    in_force = policies.in_force_at(instant)
    known = in_force.purposes.get(purpose)
    if known is None:
        return None
    return Clause(known.clause, policies.clause_title(known.clause, in_force.version))


def _consent(
    row: RecordedConsentChange,
    data: Mapping[str, Any] | None,
    policies: PolicyVersions,
) -> ConsentEntry:
    return ConsentEntry(
        event_id=row.event_id,
        action="given" if row.granted else "withdrawn",
        instant=row.instant,
        purpose=row.purpose,
        clause=_purpose_clause(policies, row.purpose, row.instant),
        controller=row.controller,
        channel=row.channel,
        notice=_notice(data),
        expires_at=row.expires_at,
        reason=_text(data, "reason"),
    )


def _disclosure(
    row: RecordedDisclosure,
    data: Mapping[str, Any] | None,
    policies: PolicyVersions,
    violations: Mapping[str, Sequence[ViolationEntry]],
) -> DisclosureEntry:
    recipient = data.get("recipient") if data is not None else None
    name = _text(recipient, "name") if isinstance(recipient, Mapping) else None
    return DisclosureEntry(
        event_id=row.event_id,
        instant=row.instant,
        purpose=row.purpose,
        clause=_purpose_clause(policies, row.purpose, row.instant),
        controller=row.controller,
        recipient=Recipient(row.recipient_kind, row.recipient_id, name),
        data_categories=row.data_categories,
        legal_basis_kind=row.legal_basis_kind,
        legal_basis_reference=row.legal_basis_reference,
        violations=tuple(violations.get(row.event_id, ())),
    )


def _visit(
    event_id: str,
    instant: int,
    data: Mapping[str, Any] | None,
    policies: PolicyVersions,
    violations: Mapping[str, Sequence[ViolationEntry]],
) -> VisitEntry:
    in_force = policies.in_force_at(instant)
    clause = in_force.visitors_clause
    return VisitEntry(
        event_id=event_id,
        instant=instant,
        site=_text(data, "site"),
        rights_notice=_text(data, "rights_notice"),
        clause=Clause(clause, policies.clause_title(clause, in_force.version)),
        violations=tuple(violations.get(event_id, ())),
    )


def _violation(row: RecordedViolation, policies: PolicyVersions) -> ViolationEntry:
    return ViolationEntry(
        event_id=row.event_id,
        rule=row.rule,
        clause=Clause(row.clause, policies.clause_title(row.clause, row.policy_version)),
        severity=row.severity,
        status=row.status,
        explanation=row.explanation,
        instant=row.instant,
        detected_at=row.detected_at,
        policy_version=row.policy_version,
    )


def _notice(data: Mapping[str, Any] | None) -> Notice | None:
    notice = data.get("notice") if data is not None else None
    if not isinstance(notice, Mapping):
        return None
    return Notice(_text(notice, "id"), _text(notice, "version"))


def _text(data: Mapping[str, Any] | None, key: str) -> str | None:
    """``data[key]`` when it is a string: an event's optional texts, read defensively
    because an entry that did not open, or an old one, may lack them."""
    value = data.get(key) if data is not None else None
    return value if isinstance(value, str) else None
