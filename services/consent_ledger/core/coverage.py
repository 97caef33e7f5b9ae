"""Which rules enforce which clause of the privacy statement: clause coverage.

A *policy rule* is a part of the policy that can find a breach: a purpose, a
recipient kind's rule, the visitors' notice rule, and three rules every policy
has because CONTRACT §4 gives them (a purpose the policy does not name, a
recipient kind it does not name, a disclosure after an erasure). Each enforces
the clause its breaches name. A clause whose words the policy gives but that no
rule names is a promise the ledger does not check, and coverage says so rather
than let it pass unseen.
"""

from __future__ import annotations

from dataclasses import dataclass

from consent_ledger.core.policy import Clause, Policy, Purpose, RecipientRule
from consent_ledger.core.verdicts import SEVERITY, Rule, Severity

# The clauses judge_disclosure names for the rules of CONTRACT §4 that belong to
# no purpose or recipient kind (core/verdicts.py; a unit test holds them equal).
UNKNOWN_PURPOSE_CLAUSE = "purposes"
UNKNOWN_RECIPIENT_CLAUSE = "recipients"
ERASURE_CLAUSE = "GDPR Art. 17"

# What each recipient kind's own check finds (CONTRACT §4, step 5).
_KIND_BREACH: dict[str, Rule] = {
    "group_company": Rule.RECIPIENT_NOT_PERMITTED,
    "partner": Rule.PARTNER_NOT_CERTIFIED,
    "public_authority": Rule.AUTHORITY_WITHOUT_COURT_ORDER,
    "acquirer": Rule.ACQUIRER_WITHOUT_NDA,
    "public_forum": Rule.FORUM_NON_PUBLIC_DATA,
}
_CONSENT_BREACHES = (Rule.CONSENT_MISSING, Rule.CONSENT_WITHDRAWN, Rule.CONSENT_EXPIRED)
_SEVERITY_ORDER = (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM)


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """A part of the policy that can find breaches, and the clause they break.

    ``key`` names it as the policy file does (``purposes.marketing``,
    ``recipients.partner``, ``visitors.require_rights_notice``), or for the rules
    every policy has, the list it checks against (``purposes``, ``recipients``)
    or ``erasure``.
    """

    key: str
    clause: str
    breaches: tuple[Rule, ...]
    description: str

    @property
    def severity(self) -> Severity | None:
        """The gravest severity of what it can find; None when it finds nothing."""
        found = {SEVERITY[rule] for rule in self.breaches}
        return next((severity for severity in _SEVERITY_ORDER if severity in found), None)


@dataclass(frozen=True, slots=True)
class ClauseCoverage:
    """One clause, its words if the policy gives them, and the rules enforcing it."""

    id: str
    clause: Clause | None  # None: a rule names it but the policy gives no words
    rules: tuple[PolicyRule, ...]

    @property
    def enforced(self) -> bool:
        """Whether any rule can find a breach of it."""
        return any(rule.breaches for rule in self.rules)


def policy_rules(policy: Policy) -> list[PolicyRule]:
    """Every rule of ``policy``, in the order of CONTRACT §4's checks."""
    rules = [
        PolicyRule(
            "erasure",
            ERASURE_CLAUSE,
            (Rule.SHARED_AFTER_ERASURE,),
            "nothing is shared about a subject after their erasure",
        ),
        PolicyRule(
            "purposes",
            UNKNOWN_PURPOSE_CLAUSE,
            (Rule.UNKNOWN_PURPOSE,),
            "data is shared only for a purpose the policy names",
        ),
    ]
    rules.extend(_purpose_rule(purpose) for purpose in policy.purposes.values())
    rules.append(
        PolicyRule(
            "recipients",
            UNKNOWN_RECIPIENT_CLAUSE,
            (Rule.RECIPIENT_NOT_PERMITTED,),
            "data is shared only with a kind of recipient the policy names",
        )
    )
    rules.extend(_recipient_rule(rule) for rule in policy.recipients.values())
    if policy.require_rights_notice:
        rules.append(
            PolicyRule(
                "visitors.require_rights_notice",
                policy.visitors_clause,
                (Rule.VISITOR_NOT_INFORMED,),
                "a visitor is shown a rights notice at registration",
            )
        )
    return rules


def _purpose_rule(purpose: Purpose) -> PolicyRule:
    roles = ", ".join(sorted(purpose.roles))
    if purpose.needs_consent:
        return PolicyRule(
            f"purposes.{purpose.id}",
            purpose.clause,
            (Rule.PURPOSE_NOT_PERMITTED_FOR_ROLE, *_CONSENT_BREACHES),
            f"{purpose.id!r} only for {roles}, and only with the subject's valid consent",
        )
    return PolicyRule(
        f"purposes.{purpose.id}",
        purpose.clause,
        (Rule.PURPOSE_NOT_PERMITTED_FOR_ROLE,),
        f"{purpose.id!r} only for {roles} (basis: {purpose.basis})",
    )


def _recipient_rule(rule: RecipientRule) -> PolicyRule:
    breaches: list[Rule] = []
    if rule.purposes is not None:
        breaches.append(Rule.RECIPIENT_PURPOSE_MISMATCH)
    own = _KIND_BREACH.get(rule.kind)
    if own is not None:
        breaches.append(own)
    parts = [f"shared with recipients of kind {rule.kind}"]
    if rule.purposes is not None:
        parts.append(f"only for {', '.join(sorted(rule.purposes))}")
    listed = rule.allowed or rule.certified or rule.requires_legal_basis or rule.data_categories
    if listed is not None:
        what = {
            "group_company": "only with",
            "partner": "only with certified",
            "public_authority": "only with a legal basis of kind",
            "acquirer": "only with a legal basis of kind",
            "public_forum": "only data of category",
        }.get(rule.kind, "with")
        parts.append(f"{what} {', '.join(sorted(listed))}")
    return PolicyRule(f"recipients.{rule.kind}", rule.clause, tuple(breaches), "; ".join(parts))


def clause_coverage(policy: Policy) -> list[ClauseCoverage]:
    """Per clause, the rules that enforce it: first the clauses whose words the
    policy gives, in its order (those no rule names have no rules), then the
    clauses rules name without words, in the order of the rules."""
    rules = policy_rules(policy)
    by_clause: dict[str, list[PolicyRule]] = {}
    for rule in rules:
        by_clause.setdefault(rule.clause, []).append(rule)
    ids = list(policy.clauses)
    ids.extend(clause for clause in by_clause if clause not in policy.clauses)
    return [
        ClauseCoverage(clause_id, policy.clause(clause_id), tuple(by_clause.get(clause_id, ())))
        for clause_id in ids
    ]


def unenforced_clauses(policy: Policy) -> list[str]:
    """The clauses no rule can find a breach of, in the policy's order."""
    return [coverage.id for coverage in clause_coverage(policy) if not coverage.enforced]
