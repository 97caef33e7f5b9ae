"""The rules of CONTRACT §4: judge one disclosure or visitor registration.

Pure functions from (policy, fact, consent status) to the rules it breaks. The
order of the checks, and where checking stops, is the contract's.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Final, NamedTuple

from consent_ledger.core.facts import ConsentChange, Disclosure, VisitorRegistration
from consent_ledger.core.intake import NEW_TUPLE
from consent_ledger.core.policy import Policy, RecipientRule
from consent_ledger.core.timestamps import format_micros


class Rule(StrEnum):
    """A promise of the privacy statement that an event can break."""

    UNKNOWN_PURPOSE = "unknown-purpose"
    PURPOSE_NOT_PERMITTED_FOR_ROLE = "purpose-not-permitted-for-role"
    CONSENT_MISSING = "consent-missing"
    CONSENT_WITHDRAWN = "consent-withdrawn"
    CONSENT_EXPIRED = "consent-expired"
    RECIPIENT_NOT_PERMITTED = "recipient-not-permitted"
    RECIPIENT_PURPOSE_MISMATCH = "recipient-purpose-mismatch"
    PARTNER_NOT_CERTIFIED = "partner-not-certified"
    AUTHORITY_WITHOUT_COURT_ORDER = "authority-without-court-order"
    ACQUIRER_WITHOUT_NDA = "acquirer-without-nda"
    FORUM_NON_PUBLIC_DATA = "forum-non-public-data"
    VISITOR_NOT_INFORMED = "visitor-not-informed"
    SHARED_AFTER_ERASURE = "shared-after-erasure"


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"


SEVERITY: Final[dict[Rule, Severity]] = dict.fromkeys(Rule, Severity.HIGH) | {
    Rule.AUTHORITY_WITHOUT_COURT_ORDER: Severity.CRITICAL,
    Rule.ACQUIRER_WITHOUT_NDA: Severity.CRITICAL,
    Rule.CONSENT_WITHDRAWN: Severity.CRITICAL,
    Rule.SHARED_AFTER_ERASURE: Severity.CRITICAL,
    Rule.UNKNOWN_PURPOSE: Severity.MEDIUM,
    Rule.RECIPIENT_PURPOSE_MISMATCH: Severity.MEDIUM,
    Rule.VISITOR_NOT_INFORMED: Severity.MEDIUM,
}


class Breach(NamedTuple):
    """One rule an event breaks: the clause it breaks and why, in a sentence.

    The sentence is written only when asked for: re-judging mostly finds what
    was open already, and formatting times is the costliest part of a verdict.
    """

    rule: Rule
    clause: str
    explain: Callable[[], str]

    @property
    def explanation(self) -> str:
        return self.explain()

    @property
    def severity(self) -> Severity:
        return SEVERITY[self.rule]


class ConsentStatus(NamedTuple):
    """The consent status of (subject, purpose) at an instant.

    A named tuple built with ``tuple.__new__``: compiled, a frozen dataclass's
    ``__init__`` stays a Python frame, a tenth of judging a disclosure."""

    rule: Rule | None  # None: valid; else consent-missing/-withdrawn/-expired
    decided_by: ConsentChange | None  # the consent event that decides it


def consent_status_at(changes: list[ConsentChange], instant: int) -> ConsentStatus:
    """Status from ``changes`` (sorted by (instant, seq)) at ``instant``."""
    latest = None
    for change in reversed(changes):
        if change.instant <= instant:
            latest = change
            break
    if latest is None:
        return NEW_TUPLE(ConsentStatus, (Rule.CONSENT_MISSING, None))
    if not latest.granted:
        return NEW_TUPLE(ConsentStatus, (Rule.CONSENT_WITHDRAWN, latest))
    if latest.expires_at is not None and latest.expires_at <= instant:
        return NEW_TUPLE(ConsentStatus, (Rule.CONSENT_EXPIRED, latest))
    return NEW_TUPLE(ConsentStatus, (None, latest))


def judge_disclosure(
    policy: Policy, shared: Disclosure, consent: list[ConsentChange], erased_at: int | None
) -> list[Breach]:
    """The rules a ``DataShared`` breaks, given its subject's consent history
    for its purpose and the time the subject was erased, if it was."""
    if erased_at is not None and shared.instant > erased_at:
        return [
            Breach(
                Rule.SHARED_AFTER_ERASURE,
                "GDPR Art. 17",
                lambda: (
                    f"Data was shared with {shared.recipient_kind} {shared.recipient_id!r} at {format_micros(shared.instant)}, "
                    f"after the subject asked to be erased at {format_micros(erased_at)}."
                ),
            )
        ]
    purpose = policy.purposes.get(shared.purpose)
    if purpose is None:
        return [
            Breach(
                Rule.UNKNOWN_PURPOSE,
                "purposes",
                lambda: (
                    f"Data was shared for {shared.purpose!r}, a purpose the privacy statement does not name."
                ),
            )
        ]
    breaches: list[Breach] = []
    if shared.role not in purpose.roles:
        breaches.append(
            Breach(
                Rule.PURPOSE_NOT_PERMITTED_FOR_ROLE,
                purpose.clause,
                lambda: (
                    f"Data of a {shared.role} was used for {purpose.id!r}, which clause {purpose.clause} "
                    f"allows only for {', '.join(sorted(purpose.roles))}."
                ),
            )
        )
    elif purpose.needs_consent:
        status = consent_status_at(consent, shared.instant)
        if status.rule is not None:
            breaches.append(
                Breach(
                    status.rule,
                    purpose.clause,
                    lambda: _consent_sentence(status, purpose.id, shared.instant),
                )
            )
    rule = policy.recipients.get(shared.recipient_kind)
    if rule is None:
        breaches.append(
            Breach(
                Rule.RECIPIENT_NOT_PERMITTED,
                "recipients",
                lambda: (
                    f"Data was shared with {shared.recipient_id!r}, a recipient of kind "
                    f"{shared.recipient_kind!r}, which the privacy statement does not allow."
                ),
            )
        )
        return breaches
    if rule.purposes is not None and shared.purpose not in rule.purposes:
        breaches.append(
            Breach(
                Rule.RECIPIENT_PURPOSE_MISMATCH,
                rule.clause,
                lambda: (
                    f"Data was shared with {_with_article(rule.kind)} for {shared.purpose!r}, but "
                    f"{rule.clause} allows sharing with {_with_article(rule.kind)} only for "
                    f"{', '.join(sorted(rule.purposes or ()))}."
                ),
            )
        )
    recipient_breach = _recipient_breach(rule, shared)
    if recipient_breach is not None:
        breaches.append(recipient_breach)
    return breaches


def _recipient_breach(rule: RecipientRule, shared: Disclosure) -> Breach | None:
    """Step 5 of CONTRACT §4: what each kind of recipient requires."""
    kind, clause, recipient = rule.kind, rule.clause, shared.recipient_id
    if kind == "group_company" and recipient not in (rule.allowed or ()):
        return Breach(
            Rule.RECIPIENT_NOT_PERMITTED,
            clause,
            lambda: f"Data was shared with {recipient!r}, which is not a listed group company.",
        )
    if kind == "partner" and recipient not in (rule.certified or ()):
        return Breach(
            Rule.PARTNER_NOT_CERTIFIED,
            clause,
            lambda: (
                f"Data was shared with partner {recipient!r}, which is not a certified partner."
            ),
        )
    if kind in ("public_authority", "acquirer") and not _has_legal_basis(
        shared, rule.requires_legal_basis
    ):
        needed = ", ".join(sorted(rule.requires_legal_basis or ()))
        if kind == "public_authority":
            return Breach(
                Rule.AUTHORITY_WITHOUT_COURT_ORDER,
                clause,
                lambda: (
                    f"Data was handed to authority {recipient!r} without a referenced legal basis "
                    f"of kind {needed} (a court order or similar)."
                ),
            )
        return Breach(
            Rule.ACQUIRER_WITHOUT_NDA,
            clause,
            lambda: (
                f"Data was given to acquirer {recipient!r} without a referenced legal basis of kind "
                f"{needed} (a signed non-disclosure agreement)."
            ),
        )
    if kind == "public_forum":
        outside = sorted(set(shared.data_categories) - (rule.data_categories or frozenset()))
        if outside:
            return Breach(
                Rule.FORUM_NON_PUBLIC_DATA,
                clause,
                lambda: (
                    f"Data categories {', '.join(outside)} were published on forum {recipient!r}, "
                    f"where only {', '.join(sorted(rule.data_categories or ()))} may appear."
                ),
            )
    return None


def _with_article(kind: str) -> str:
    """'a partner', 'an acquirer': a recipient kind as the object of a sentence."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def _has_legal_basis(shared: Disclosure, accepted_kinds: frozenset[str] | None) -> bool:
    return (
        shared.legal_basis_kind in (accepted_kinds or ())
        and shared.legal_basis_reference is not None
        and bool(shared.legal_basis_reference.strip())
    )


def _consent_sentence(status: ConsentStatus, purpose: str, instant: int) -> str:
    when = format_micros(instant)
    decided = status.decided_by
    if status.rule is Rule.CONSENT_MISSING or decided is None:
        return (
            f"Data was shared for {purpose!r} at {when}, but the subject had never consented to it."
        )
    if status.rule is Rule.CONSENT_WITHDRAWN:
        return (
            f"Data was shared for {purpose!r} at {when}, after the subject withdrew consent at "
            f"{format_micros(decided.instant)} (event {decided.event_id})."
        )
    return (
        f"Data was shared for {purpose!r} at {when}, after the subject's consent expired at "
        f"{format_micros(decided.expires_at or decided.instant)} (event {decided.event_id})."
    )


def judge_visitor(policy: Policy, visit: VisitorRegistration) -> list[Breach]:
    """The rules a ``VisitorRegistered`` breaks: was the visitor told their rights?"""
    notice = visit.rights_notice
    if policy.require_rights_notice and (notice is None or not notice.strip()):
        return [
            Breach(
                Rule.VISITOR_NOT_INFORMED,
                policy.visitors_clause,
                lambda: "The visitor registered without being shown a rights notice.",
            )
        ]
    return []
