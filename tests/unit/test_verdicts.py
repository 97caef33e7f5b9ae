"""The rules of CONTRACT §4: severities, clauses, the order of checks, consent status."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consent_ledger.core.facts import (
    ConsentChange,
    Disclosure,
    Erasure,
    Fact,
    VisitorRegistration,
    fact_of,
)
from consent_ledger.core.intake import ValidEvent, validate
from consent_ledger.core.policy import Policy, load_reference_policy, parse_policy
from consent_ledger.core.timestamps import parse_instant
from consent_ledger.core.verdicts import (
    SEVERITY,
    Breach,
    Rule,
    Severity,
    consent_status_at,
    judge_disclosure,
    judge_visitor,
)

pytestmark = pytest.mark.unit

POLICY = load_reference_policy()
T = "2026-03-01T08:00:00Z"
BEFORE = "2026-03-01T07:00:00Z"
LATER = "2026-03-01T09:00:00Z"
_ABSENT = object()


def envelope(event_type: str, event_id: str, time: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:system:test",
        "type": event_type,
        "subject": "ola",
        "time": time,
        "data": data,
    }


def shared(
    event_id: str = "ds-1",
    time: str = T,
    purpose: str = "delivery",
    role: str = "user",
    kind: str = "group_company",
    recipient: str = "visma-spcs-ab",
    categories: tuple[str, ...] = ("contact_details",),
    legal_basis: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "purpose": purpose,
        "subject_role": role,
        "controller": "visma-software-as",
        "recipient": {"kind": kind, "id": recipient},
        "data_categories": list(categories),
    }
    if legal_basis is not None:
        data["legal_basis"] = legal_basis
    return envelope("DataShared", event_id, time, data)


def granted(
    time: str, purpose: str = "marketing", expires_at: str | None = None, event_id: str = ""
) -> dict[str, Any]:
    data = {
        "purpose": purpose,
        "subject_role": "customer_contact",
        "controller": "visma-software-as",
    }
    if expires_at is not None:
        data["expires_at"] = expires_at
    return envelope("ConsentGiven", event_id or f"cg-{time}", time, data)


def withdrawn(time: str, purpose: str = "marketing", event_id: str = "") -> dict[str, Any]:
    data = {"purpose": purpose, "controller": "visma-software-as"}
    return envelope("ConsentWithdrawn", event_id or f"cw-{time}", time, data)


def visitor(rights_notice: Any = _ABSENT) -> dict[str, Any]:
    data: dict[str, Any] = {"site": "oslo-hq"}
    if rights_notice is not _ABSENT:
        data["rights_notice"] = rights_notice
    return envelope("VisitorRegistered", "vr-1", T, data)


def fact(body: dict[str, Any], seq: int = 1) -> Fact:
    checked = validate(json.dumps(body).encode())
    assert isinstance(checked, ValidEvent), checked
    return fact_of(checked, seq)


def erasure(time: str = T) -> dict[str, Any]:
    return envelope("ErasureRequested", "er-1", time, {"reason": "asked"})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            shared(legal_basis={"kind": "court_order", "reference": "TOSLO-1"}),
            Disclosure(
                event_id="ds-1", subject="ola", instant=parse_instant(T), seq=7, purpose="delivery",
                role="user", recipient_kind="group_company", recipient_id="visma-spcs-ab",
                data_categories=("contact_details",), legal_basis_kind="court_order",
                legal_basis_reference="TOSLO-1",
            ),
            id="DataShared",
        ),
        pytest.param(
            shared(),
            Disclosure(
                event_id="ds-1", subject="ola", instant=parse_instant(T), seq=7, purpose="delivery",
                role="user", recipient_kind="group_company", recipient_id="visma-spcs-ab",
                data_categories=("contact_details",),
            ),
            id="DataShared without a legal basis",
        ),
        pytest.param(
            granted(T, expires_at=LATER),
            ConsentChange(
                event_id=f"cg-{T}", subject="ola", instant=parse_instant(T), seq=7,
                purpose="marketing", granted=True, expires_at=parse_instant(LATER),
            ),
            id="ConsentGiven",
        ),
        pytest.param(
            withdrawn(T),
            ConsentChange(
                event_id=f"cw-{T}", subject="ola", instant=parse_instant(T), seq=7,
                purpose="marketing", granted=False,
            ),
            id="ConsentWithdrawn",
        ),
        pytest.param(
            visitor("visitor-notice-v3"),
            VisitorRegistration(
                event_id="vr-1", subject="ola", instant=parse_instant(T), seq=7,
                rights_notice="visitor-notice-v3",
            ),
            id="VisitorRegistered",
        ),
        pytest.param(
            erasure(),
            Erasure(event_id="er-1", subject="ola", instant=parse_instant(T), seq=7),
            id="ErasureRequested",
        ),
    ],
)  # fmt: skip
def test_facts_are_what_their_classes_build(body: dict[str, Any], expected: Fact) -> None:
    # fact_of builds named tuples with tuple.__new__, which checks neither the
    # number of fields nor their order: the classes' own constructors do.
    built = fact_of(validate_event(body), 7)
    assert type(built) is type(expected)
    assert built._asdict() == expected._asdict()
    assert len(built) == len(type(expected)._fields)


def test_a_valid_event_is_what_its_class_builds() -> None:
    event = validate_event(shared())
    assert event == ValidEvent(
        id="ds-1", type="DataShared", subject="ola", instant=parse_instant(T), body=event.body
    )
    assert event._asdict()["subject"] == "ola"


def validate_event(body: dict[str, Any]) -> ValidEvent:
    checked = validate(json.dumps(body).encode())
    assert isinstance(checked, ValidEvent), checked
    return checked


def history(*consents: dict[str, Any]) -> list[ConsentChange]:
    """Consent facts in ingest order (seq), sorted as the timeline keeps them."""
    changes = [fact(body, seq) for seq, body in enumerate(consents, start=1)]
    assert all(isinstance(change, ConsentChange) for change in changes)
    return sorted(changes, key=lambda change: (change.instant, change.seq))  # type: ignore[union-attr]


def judge(
    disclosure: dict[str, Any],
    *consents: dict[str, Any],
    erased_at: str | None = None,
    policy: Policy = POLICY,
) -> list[Breach]:
    target = fact(disclosure, seq=1000)
    assert isinstance(target, Disclosure)
    relevant = [c for c in history(*consents) if c.purpose == target.purpose]
    erased = parse_instant(erased_at) if erased_at is not None else None
    return judge_disclosure(policy, target, relevant, erased)


def rules(breaches: list[Breach]) -> list[str]:
    return [breach.rule.value for breach in breaches]


def is_a_sentence(text: str) -> bool:
    return bool(text) and text[0].isupper() and text.endswith(".") and len(text.split()) >= 5


# -- every rule: severity, clause, explanation ---------------------------------

CONTRACT_SEVERITY = {
    "authority-without-court-order": "critical",
    "acquirer-without-nda": "critical",
    "consent-withdrawn": "critical",
    "shared-after-erasure": "critical",
    "unknown-purpose": "medium",
    "recipient-purpose-mismatch": "medium",
    "visitor-not-informed": "medium",
    "purpose-not-permitted-for-role": "high",
    "consent-missing": "high",
    "consent-expired": "high",
    "recipient-not-permitted": "high",
    "partner-not-certified": "high",
    "forum-non-public-data": "high",
}

MARKETING = {"purpose": "marketing", "role": "customer_contact"}

RULE_CASES = [
    pytest.param(
        "unknown-purpose",
        "purposes",
        lambda: judge(shared(purpose="profiling")),
        id="unknown-purpose",
    ),
    pytest.param(
        "purpose-not-permitted-for-role",
        "l",
        lambda: judge(shared(purpose="marketing", role="jobseeker"), granted(BEFORE)),
        id="purpose-not-permitted-for-role",
    ),
    pytest.param("consent-missing", "l", lambda: judge(shared(**MARKETING)), id="consent-missing"),
    pytest.param(
        "consent-withdrawn",
        "l",
        lambda: judge(shared(**MARKETING), granted("2026-02-01T00:00:00Z"), withdrawn(BEFORE)),
        id="consent-withdrawn",
    ),
    pytest.param(
        "consent-expired",
        "l",
        lambda: judge(shared(**MARKETING), granted(BEFORE, expires_at="2026-03-01T07:30:00Z")),
        id="consent-expired",
    ),
    pytest.param(
        "recipient-not-permitted",
        "recipients",
        lambda: judge(shared(kind="data_broker", recipient="acme-leads")),
        id="recipient-not-permitted: unknown kind",
    ),
    pytest.param(
        "recipient-not-permitted",
        "Innenfor Visma konsernet",
        lambda: judge(shared(recipient="visma-unknown-gmbh")),
        id="recipient-not-permitted: group company not allowed",
    ),
    pytest.param(
        "recipient-purpose-mismatch",
        "Visma partnere",
        lambda: judge(shared(purpose="support", kind="partner", recipient="northwind-consulting")),
        id="recipient-purpose-mismatch",
    ),
    pytest.param(
        "partner-not-certified",
        "Visma partnere",
        lambda: judge(shared(kind="partner", recipient="acme-consulting")),
        id="partner-not-certified",
    ),
    pytest.param(
        "authority-without-court-order",
        "Offentlige myndigheter",
        lambda: judge(
            shared(purpose="legal_disclosure", kind="public_authority", recipient="politiet")
        ),
        id="authority-without-court-order",
    ),
    pytest.param(
        "acquirer-without-nda",
        "Fusjoner og oppkjøp",
        lambda: judge(shared(purpose="corporate_transaction", kind="acquirer", recipient="bigco")),
        id="acquirer-without-nda",
    ),
    pytest.param(
        "forum-non-public-data",
        "Vismas nettforum",
        lambda: judge(
            shared(
                purpose="forum_publication",
                kind="public_forum",
                recipient="community.visma.com",
                categories=("forum_post", "email_address"),
            )
        ),
        id="forum-non-public-data",
    ),
    pytest.param(
        "shared-after-erasure",
        "GDPR Art. 17",
        lambda: judge(shared(), erased_at=BEFORE),
        id="shared-after-erasure",
    ),
    pytest.param(
        "visitor-not-informed",
        "visitors",
        lambda: judge_visitor(POLICY, fact(visitor(None))),  # type: ignore[arg-type]
        id="visitor-not-informed",
    ),
]


@pytest.mark.parametrize(("rule", "clause", "case"), RULE_CASES)
def test_each_rule_with_its_severity_clause_and_explanation(
    rule: str, clause: str, case: Any
) -> None:
    breaches = case()
    assert rules(breaches) == [rule]
    (breach,) = breaches
    assert breach.severity.value == CONTRACT_SEVERITY[rule]
    assert breach.clause == clause
    assert is_a_sentence(breach.explanation), breach.explanation


def test_the_cases_cover_every_rule_of_the_contract() -> None:
    covered = {param.values[0] for param in RULE_CASES}
    assert covered == set(CONTRACT_SEVERITY) == {rule.value for rule in Rule}


def test_severities_are_the_contracts() -> None:
    assert {rule.value: severity.value for rule, severity in SEVERITY.items()} == CONTRACT_SEVERITY
    assert set(Severity) == {Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM}


@pytest.mark.parametrize(
    "disclosure",
    [
        pytest.param(shared(), id="group company, any purpose"),
        pytest.param(shared(kind="partner", recipient="northwind-consulting"), id="partner"),
        pytest.param(
            shared(
                purpose="legal_disclosure",
                role="jobseeker",
                kind="public_authority",
                recipient="politiet",
                legal_basis={"kind": "court_order", "reference": "TOSLO-2026-1"},
            ),
            id="authority with a court order",
        ),
        pytest.param(
            shared(
                purpose="legal_disclosure",
                role="visitor",
                kind="public_authority",
                recipient="skatteetaten",
                legal_basis={"kind": "legal_order", "reference": "§ 10-1"},
            ),
            id="authority with a legal order",
        ),
        pytest.param(
            shared(
                purpose="corporate_transaction",
                kind="acquirer",
                recipient="bigco",
                legal_basis={"kind": "nda", "reference": "NDA-7"},
            ),
            id="acquirer under NDA",
        ),
        pytest.param(
            shared(
                purpose="forum_publication",
                kind="public_forum",
                recipient="community",
                categories=("forum_post", "forum_post"),
            ),
            id="forum post on the forum",
        ),
        pytest.param(shared(purpose="premises_security", role="visitor"), id="visitor data kept"),
        pytest.param(shared(time=T), id="erased later"),
    ],
)
def test_disclosures_the_policy_allows(disclosure: dict[str, Any]) -> None:
    assert judge(disclosure, erased_at=LATER) == []


# -- the order of checks and where checking stops ------------------------------


def test_an_unknown_purpose_stops_everything() -> None:
    breaches = judge(shared(purpose="profiling", role="visitor", kind="data_broker", recipient="x"))
    assert rules(breaches) == ["unknown-purpose"]


def test_a_role_mismatch_suppresses_the_consent_check() -> None:
    breaches = judge(shared(purpose="skills_analysis", role="customer_contact"))
    assert rules(breaches) == ["purpose-not-permitted-for-role"]
    assert "customer_contact" in breaches[0].explanation


def test_no_consent_check_for_other_bases() -> None:
    for purpose in ("delivery", "related_offers", "legal_disclosure"):
        assert judge(shared(purpose=purpose, role="customer_contact")) == []


def test_an_unknown_recipient_kind_stops_steps_4_and_5_but_keeps_step_2() -> None:
    breaches = judge(shared(**MARKETING, kind="data_broker", recipient="acme-leads"))
    assert rules(breaches) == ["consent-missing", "recipient-not-permitted"]
    assert breaches[1].clause == "recipients"


def test_a_role_mismatch_and_a_recipient_rule_are_both_reported() -> None:
    breaches = judge(
        shared(purpose="invoicing", role="jobseeker", kind="partner", recipient="acme")
    )
    assert rules(breaches) == [
        "purpose-not-permitted-for-role",
        "recipient-purpose-mismatch",
        "partner-not-certified",
    ]


def test_rule_4_and_rule_5_are_reported_together() -> None:
    uncertified_partner_wrong_purpose = shared(purpose="support", kind="partner", recipient="acme")
    assert rules(judge(uncertified_partner_wrong_purpose)) == [
        "recipient-purpose-mismatch",
        "partner-not-certified",
    ]
    authority_wrong_purpose = shared(kind="public_authority", recipient="politiet")
    assert rules(judge(authority_wrong_purpose)) == [
        "recipient-purpose-mismatch",
        "authority-without-court-order",
    ]
    forum_wrong_purpose = shared(kind="public_forum", recipient="community", categories=("cv",))
    assert rules(judge(forum_wrong_purpose)) == [
        "recipient-purpose-mismatch",
        "forum-non-public-data",
    ]


def test_explanations_read_as_english() -> None:
    acquirer = judge(shared(kind="acquirer", recipient="bigco"))
    assert "shared with an acquirer for 'delivery'" in explanation_of(
        acquirer, "recipient-purpose-mismatch"
    )
    partner = judge(shared(purpose="support", kind="partner", recipient="acme"))
    assert "with a partner only for" in explanation_of(partner, "recipient-purpose-mismatch")
    unknown = judge(shared(kind="advertiser", recipient="adco"))
    assert explanation_of(unknown, "recipient-not-permitted") == (
        "Data was shared with 'adco', a recipient of kind 'advertiser', which the privacy "
        "statement does not allow."
    )


def explanation_of(breaches: list[Any], rule: str) -> str:
    [breach] = [breach for breach in breaches if breach.rule.value == rule]
    return str(breach.explanation)


def test_consent_and_recipient_rules_are_reported_together() -> None:
    breaches = judge(shared(**MARKETING, recipient="visma-unknown-gmbh"), withdrawn(BEFORE))
    assert rules(breaches) == ["consent-withdrawn", "recipient-not-permitted"]
    assert [b.severity for b in breaches] == [Severity.CRITICAL, Severity.HIGH]


def test_a_group_company_may_receive_for_any_purpose() -> None:
    """No `purposes` on the rule: step 4 does not apply."""
    assert judge(shared(purpose="security")) == []
    assert judge(shared(purpose="invoicing", recipient="visma-finland-oy")) == []


def test_a_rule_without_a_list_allows_the_kind_without_step_5() -> None:
    policy = parse_policy(
        """\
purposes:
  delivery: {clause: c, basis: contract, roles: [user]}
recipients:
  auditor: {clause: "Revisor"}
  courier: {purposes: [delivery]}
"""
    )
    assert judge(shared(kind="auditor", recipient="pwc"), policy=policy) == []
    assert judge(shared(kind="courier", recipient="posten"), policy=policy) == []


# -- shared after erasure ------------------------------------------------------


def test_after_erasure_nothing_else_is_checked() -> None:
    breaches = judge(
        shared(purpose="profiling", role="visitor", kind="data_broker", recipient="x"),
        erased_at=BEFORE,
    )
    assert rules(breaches) == ["shared-after-erasure"]
    assert "erased" in breaches[0].explanation


def test_erasure_at_the_very_instant_is_not_after_it() -> None:
    assert rules(judge(shared(**MARKETING), erased_at=T)) == ["consent-missing"]
    assert rules(judge(shared(**MARKETING), erased_at="2026-03-01T07:59:59.999999Z")) == [
        "shared-after-erasure"
    ]


def test_erasure_compares_instants_across_offsets() -> None:
    assert judge(shared(time="2026-03-01T10:00:00+02:00"), erased_at=T) == []
    assert rules(judge(shared(time="2026-03-01T03:00:01-05:00"), erased_at=T)) == [
        "shared-after-erasure"
    ]


# -- consent status at an instant ----------------------------------------------


def status_rule(at: str, *consents: dict[str, Any]) -> str | None:
    status = consent_status_at(history(*consents), parse_instant(at))
    return status.rule.value if status.rule is not None else None


def test_no_consent_event_is_missing() -> None:
    assert status_rule(T) == "consent-missing"
    assert consent_status_at([], parse_instant(T)).decided_by is None


def test_a_grant_at_exactly_t_is_valid() -> None:
    assert status_rule(T, granted(T)) is None
    assert judge(shared(**MARKETING), granted(T)) == []


def test_a_grant_after_t_does_not_count() -> None:
    assert status_rule(T, granted("2026-03-01T08:00:00.000001Z")) == "consent-missing"


def test_an_expiry_exactly_at_t_is_expired() -> None:
    assert status_rule(T, granted(BEFORE, expires_at=T)) == "consent-expired"
    assert status_rule(T, granted(BEFORE, expires_at="2026-03-01T08:00:00.000001Z")) is None
    assert status_rule(T, granted(BEFORE, expires_at="2026-03-01T09:00:00+01:00")) == (
        "consent-expired"
    )


def test_a_withdrawal_at_exactly_t_is_withdrawn() -> None:
    assert status_rule(T, granted(BEFORE), withdrawn(T)) == "consent-withdrawn"


def test_withdrawal_then_regrant() -> None:
    consents = (
        granted("2026-03-01T06:00:00Z"),
        withdrawn("2026-03-01T07:00:00Z"),
        granted("2026-03-01T07:30:00Z"),
    )
    assert status_rule("2026-03-01T06:30:00Z", *consents) is None
    assert status_rule("2026-03-01T07:15:00Z", *consents) == "consent-withdrawn"
    assert status_rule(T, *consents) is None
    assert status_rule("2026-03-01T05:00:00Z", *consents) == "consent-missing"


def test_a_new_grant_replaces_an_expired_one() -> None:
    consents = (granted("2026-03-01T06:00:00Z", expires_at=BEFORE), granted("2026-03-01T07:30:00Z"))
    assert status_rule("2026-03-01T07:15:00Z", *consents) == "consent-expired"
    assert status_rule(T, *consents) is None


def test_the_latest_grant_decides_even_with_an_earlier_expiry() -> None:
    """A later grant with a short expiry overrides an earlier open-ended one."""
    consents = (granted("2026-03-01T06:00:00Z"), granted(BEFORE, expires_at="2026-03-01T07:30:00Z"))
    assert status_rule(T, *consents) == "consent-expired"


def test_ties_in_time_go_to_the_one_ingested_later() -> None:
    grant_then_withdrawal = history(granted(BEFORE), withdrawn(BEFORE))
    withdrawal_then_grant = history(withdrawn(BEFORE), granted(BEFORE))
    at = parse_instant(T)
    assert consent_status_at(grant_then_withdrawal, at).rule is Rule.CONSENT_WITHDRAWN
    assert consent_status_at(withdrawal_then_grant, at).rule is None
    # The same instant written with other offsets is still a tie.
    tie = history(withdrawn("2026-03-01T09:00:00+02:00"), granted("2026-03-01T02:00:00-05:00"))
    assert consent_status_at(tie, at).rule is None


def test_instants_compare_across_offsets() -> None:
    # 10:00+02:00 is 08:00Z: the grant is exactly at t.
    assert status_rule(T, granted("2026-03-01T10:00:00+02:00")) is None
    # 09:00:00.5+01:00 is 08:00:00.5Z: after t, although "09" > "08".
    assert status_rule(T, granted("2026-03-01T09:00:00.5+01:00")) == "consent-missing"
    # 03:15-05:00 is 08:15Z: the withdrawal is after t.
    assert status_rule(T, granted(BEFORE), withdrawn("2026-03-01T03:15:00-05:00")) is None
    assert (
        status_rule(
            "2026-03-01T10:15:00+02:00", granted(BEFORE), withdrawn("2026-03-01T03:15:00-05:00")
        )
        == "consent-withdrawn"
    )


def test_fractional_seconds_count() -> None:
    consents = (granted("2026-03-01T08:00:00.500Z"),)
    assert status_rule("2026-03-01T08:00:00.250Z", *consents) == "consent-missing"
    assert status_rule("2026-03-01T08:00:00.5Z", *consents) is None
    assert status_rule("2026-03-01T08:00:00.4999999Z", *consents) == "consent-missing"
    expiring = (granted(BEFORE, expires_at="2026-03-01T08:00:00.000001Z"),)
    assert status_rule(T, *expiring) is None
    assert status_rule("2026-03-01T08:00:00.000001Z", *expiring) == "consent-expired"


def test_the_deciding_consent_event_is_named() -> None:
    consents = history(
        granted("2026-02-01T00:00:00Z", event_id="cg-1"), withdrawn(BEFORE, event_id="cw-1")
    )
    status = consent_status_at(consents, parse_instant(T))
    assert status.decided_by is not None
    assert status.decided_by.event_id == "cw-1"
    breaches = judge(
        shared(**MARKETING), granted("2026-02-01T00:00:00Z"), withdrawn(BEFORE, event_id="cw-1")
    )
    assert "cw-1" in breaches[0].explanation


def test_consent_for_another_purpose_does_not_count() -> None:
    assert rules(judge(shared(**MARKETING), granted(BEFORE, purpose="cloud_access"))) == [
        "consent-missing"
    ]


# -- legal bases, forum categories, group companies ----------------------------

AUTHORITY = {"purpose": "legal_disclosure", "kind": "public_authority", "recipient": "politiet"}
ACQUIRER = {"purpose": "corporate_transaction", "kind": "acquirer", "recipient": "bigco"}


@pytest.mark.parametrize(
    ("recipient", "legal_basis", "expected"),
    [
        (AUTHORITY, None, ["authority-without-court-order"]),
        (AUTHORITY, {"kind": "court_order"}, ["authority-without-court-order"]),
        (AUTHORITY, {"kind": "court_order", "reference": None}, ["authority-without-court-order"]),
        (AUTHORITY, {"kind": "court_order", "reference": ""}, ["authority-without-court-order"]),
        (AUTHORITY, {"kind": "court_order", "reference": " \t"}, ["authority-without-court-order"]),
        (AUTHORITY, {"kind": "subpoena", "reference": "S-1"}, ["authority-without-court-order"]),
        (AUTHORITY, {"kind": "nda", "reference": "NDA-1"}, ["authority-without-court-order"]),
        (AUTHORITY, {"kind": "Court_Order", "reference": "C-1"}, ["authority-without-court-order"]),
        (AUTHORITY, {"kind": "court_order", "reference": "TOSLO-1"}, []),
        (AUTHORITY, {"kind": "legal_order", "reference": "§ 10-1"}, []),
        (ACQUIRER, None, ["acquirer-without-nda"]),
        (ACQUIRER, {"kind": "nda"}, ["acquirer-without-nda"]),
        (ACQUIRER, {"kind": "nda", "reference": "  "}, ["acquirer-without-nda"]),
        (ACQUIRER, {"kind": "court_order", "reference": "TOSLO-1"}, ["acquirer-without-nda"]),
        (ACQUIRER, {"kind": "nda", "reference": "NDA-2026-4"}, []),
    ],
)
def test_legal_basis(
    recipient: dict[str, str], legal_basis: dict[str, Any] | None, expected: list[str]
) -> None:
    assert rules(judge(shared(**recipient, legal_basis=legal_basis))) == expected


@pytest.mark.parametrize(
    ("categories", "expected"),
    [
        (("forum_post",), []),
        (("forum_post", "forum_post"), []),
        (("forum_post", "email_address"), ["forum-non-public-data"]),
        (("phone",), ["forum-non-public-data"]),
        (("Forum_Post",), ["forum-non-public-data"]),
    ],
)
def test_forum_categories(categories: tuple[str, ...], expected: list[str]) -> None:
    disclosure = shared(
        purpose="forum_publication",
        kind="public_forum",
        recipient="community",
        categories=categories,
    )
    assert rules(judge(disclosure)) == expected


def test_a_forum_breach_names_the_categories_outside_the_list() -> None:
    disclosure = shared(
        purpose="forum_publication",
        kind="public_forum",
        recipient="community",
        categories=("forum_post", "email_address", "phone"),
    )
    (breach,) = judge(disclosure)
    assert "email_address" in breach.explanation
    assert "phone" in breach.explanation


@pytest.mark.parametrize("company", sorted(POLICY.recipients["group_company"].allowed or ()))
def test_every_listed_group_company_may_receive(company: str) -> None:
    assert judge(shared(recipient=company)) == []


def test_group_company_ids_are_exact() -> None:
    assert rules(judge(shared(recipient="Visma-Spcs-AB"))) == ["recipient-not-permitted"]
    assert rules(judge(shared(recipient="visma-spcs-ab "))) == ["recipient-not-permitted"]


# -- visitors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rights_notice", "expected"),
    [
        ("visitor-notice-v3", []),
        ("v1", []),
        ("", ["visitor-not-informed"]),
        ("   ", ["visitor-not-informed"]),
        ("\t\n", ["visitor-not-informed"]),
        (None, ["visitor-not-informed"]),
        (_ABSENT, ["visitor-not-informed"]),
    ],
)
def test_visitor_rights_notice(rights_notice: Any, expected: list[str]) -> None:
    registration = fact(visitor(rights_notice))
    assert isinstance(registration, VisitorRegistration)
    assert rules(judge_visitor(POLICY, registration)) == expected


@pytest.mark.parametrize("rights_notice", ["v1", "", None, _ABSENT])
def test_visitors_need_no_notice_when_the_policy_says_so(rights_notice: Any) -> None:
    policy = parse_policy(
        "purposes: {}\nvisitors:\n  require_rights_notice: false\n", "lenient.yaml"
    )
    registration = fact(visitor(rights_notice))
    assert isinstance(registration, VisitorRegistration)
    assert judge_visitor(policy, registration) == []


# -- explanations --------------------------------------------------------------


@pytest.mark.parametrize(
    "breaches",
    [
        pytest.param(lambda: judge(shared(**MARKETING, kind="x", recipient="y")), id="missing"),
        pytest.param(lambda: judge(shared(**MARKETING), withdrawn(BEFORE)), id="withdrawn"),
        pytest.param(
            lambda: judge(shared(**MARKETING), granted(BEFORE, expires_at=T)), id="expired"
        ),
        pytest.param(
            lambda: judge(
                shared(purpose="invoicing", role="jobseeker", kind="partner", recipient="acme")
            ),
            id="three at once",
        ),
        pytest.param(
            lambda: judge(shared(kind="acquirer", recipient="bigco")), id="acquirer wrong purpose"
        ),
    ],
)
def test_every_explanation_is_a_sentence(breaches: Any) -> None:
    found = breaches()
    assert found
    for breach in found:
        assert is_a_sentence(breach.explanation), breach.explanation
        assert breach.clause.strip()


def test_a_consent_explanation_says_when() -> None:
    (breach,) = judge(shared(**MARKETING, time="2026-03-01T10:00:00+02:00"), withdrawn(BEFORE))
    assert "2026-03-01T08:00:00" in breach.explanation  # the instant, in UTC
    assert "2026-03-01T07:00:00" in breach.explanation
