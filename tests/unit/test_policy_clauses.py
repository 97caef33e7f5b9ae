"""The policy's clauses in the statement's words (`clauses`), and clause coverage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from consent_ledger.core.coverage import (
    ERASURE_CLAUSE,
    UNKNOWN_PURPOSE_CLAUSE,
    UNKNOWN_RECIPIENT_CLAUSE,
    clause_coverage,
    policy_rules,
    unenforced_clauses,
)
from consent_ledger.core.facts import Disclosure
from consent_ledger.core.policy import (
    Policy,
    PolicyError,
    PolicyVersions,
    load_reference_policy,
    parse_policy,
)
from consent_ledger.core.verdicts import Rule, judge_disclosure

pytestmark = pytest.mark.unit

# The two privacy statements (copies of the shared seeds/), which the reference policy quotes.
SEEDS = Path(__file__).resolve().parents[1] / "data" / "seeds"

RULES = """\
purposes:
  delivery: {clause: "c", basis: contract, roles: [customer_contact]}
  marketing: {clause: "l", basis: consent, roles: [customer_contact]}
recipients:
  partner: {clause: partners, certified: [northwind], purposes: [delivery]}
visitors: {clause: visitors}
"""

CLAUSES = """\
clauses:
  "c":
    title: {en: "Perform deliveries in accordance with a customer agreement"}
  "l":
    title: {en: "To promote new products and services"}
    text: {en: "l) To promote new products and services"}
  partners:
    title: {"no": "Visma partnere"}
    text: {"no": "Visma kan dele dine personopplysninger med våre partnere."}
    translation:
      title: {en: "Visma partners"}
  visitors:
    title: {en: "Visitors", "no": "Besøkende"}
  rights:
    title: {en: "Your rights"}
"""


def policy_with(clauses: str) -> Policy:
    return parse_policy(RULES + clauses, "p.yaml")


def refusal(clauses: str) -> str:
    with pytest.raises(PolicyError) as caught:
        policy_with(clauses)
    return str(caught.value)


def test_clauses_are_read_in_the_files_order_with_their_words_by_language() -> None:
    policy = policy_with(CLAUSES)

    assert list(policy.clauses) == ["c", "l", "partners", "visitors", "rights"]
    partners = policy.clause("partners")
    assert partners is not None
    assert partners.title_in("no") == "Visma partnere"
    assert partners.title_in("en") is None  # the statement has no English words for it
    assert partners.translated_title == {"en": "Visma partners"}
    assert partners.text_in("no") == "Visma kan dele dine personopplysninger med våre partnere."
    promote, deliveries = policy.clause("l"), policy.clause("c")
    assert promote is not None and promote.text == {"en": "l) To promote new products and services"}
    assert deliveries is not None and deliveries.text == {}  # text is optional
    assert policy.clause("nowhere") is None


def test_a_title_is_shown_in_english_else_in_the_statements_own_language_never_translated() -> None:
    policy = policy_with(CLAUSES)

    assert policy.clause_title("visitors") == "Visitors"
    assert policy.clause_title("partners") == "Visma partnere"
    assert policy.clause_title("c") == "Perform deliveries in accordance with a customer agreement"
    assert policy.clause_title("GDPR Art. 17") is None


def test_a_clause_id_written_as_a_number_is_the_clause_a_rule_names_so() -> None:
    policy = parse_policy(
        "purposes:\n  delivery: {clause: 3, basis: contract, roles: [user]}\n"
        "visitors: {require_rights_notice: false}\n"
        "clauses:\n  3: {title: {en: Deliveries}}\n",
        "p.yaml",
    )

    assert policy.clause_title("3") == "Deliveries"


def test_a_policy_without_clauses_still_loads_and_has_none() -> None:
    policy = parse_policy(RULES, "p.yaml")

    assert policy.clauses == {}
    assert policy.clause_title("c") is None


def test_a_violation_s_clause_title_comes_from_the_version_that_judged_it() -> None:
    old = parse_policy("version: 1\n" + RULES + CLAUSES, "v1.yaml")
    new = parse_policy(
        "version: 2\neffective_from: 2026-01-01T00:00:00Z\n" + RULES
        + CLAUSES.replace("Visma partnere", "Visma-partnere"),
        "v2.yaml",
    )  # fmt: skip
    versions = PolicyVersions((old, new))

    assert versions.clause_title("partners", "1") == "Visma partnere"
    assert versions.clause_title("partners", "2") == "Visma-partnere"
    # A version that gives no words (or is unknown): the latest that does.
    assert versions.clause_title("partners", None) == "Visma-partnere"
    assert versions.clause_title("recipients", "1") is None


@pytest.mark.parametrize(
    ("clauses", "key", "problem"),
    [
        ("clauses: [a, b]\n", "clauses", "must be a mapping"),
        ("clauses:\n  c: {text: {en: words}}\n", "clauses.c.title", "missing"),
        ("clauses:\n  c: {title: Deliveries}\n", "clauses.c.title", "mapping of language"),
        ("clauses:\n  c: {title: {}}\n", "clauses.c.title", "names no language"),
        ("clauses:\n  c: {title: {no: Levering}}\n", "clauses.c.title", 'quoted, "no"'),
        ("clauses:\n  c: {title: {English: x}}\n", "clauses.c.title", "not a language tag"),
        ("clauses:\n  c: {title: {en: '  '}}\n", "clauses.c.title.en", "non-empty string"),
        ("clauses:\n  c: {title: {en: x}, text: [x]}\n", "clauses.c.text", "mapping of language"),
        ("clauses:\n  c: {title: {en: x}, words: {}}\n", "clauses.c.words", "unknown key"),
        (
            "clauses:\n  c: {title: {en: x}, translation: {title: {en: y}}}\n",
            "clauses.c.translation.title.en",
            "has its own words in this language",
        ),
        (
            "clauses:\n  c: {title: {en: x}, translation: {summary: {de: y}}}\n",
            "clauses.c.translation.summary",
            "unknown key",
        ),
    ],
)
def test_a_malformed_clauses_key_is_refused_naming_the_key_and_the_problem(
    clauses: str, key: str, problem: str
) -> None:
    message = refusal(clauses)

    assert message.startswith(f"p.yaml: {key}: "), message
    assert problem in message


def test_with_clauses_every_clause_a_rule_names_must_have_its_words() -> None:
    message = refusal(CLAUSES.replace('  "l":', '  "L":'))

    assert message == (
        "p.yaml: purposes.marketing.clause: 'l' is not a clause of `clauses`; add it there"
    )


def test_coverage_gives_each_clause_the_rules_that_enforce_it_and_lists_the_unenforced() -> None:
    policy = policy_with(CLAUSES)
    coverage = {item.id: item for item in clause_coverage(policy)}

    assert [rule.key for rule in coverage["l"].rules] == ["purposes.marketing"]
    assert coverage["l"].rules[0].breaches == (
        Rule.PURPOSE_NOT_PERMITTED_FOR_ROLE,
        Rule.CONSENT_MISSING,
        Rule.CONSENT_WITHDRAWN,
        Rule.CONSENT_EXPIRED,
    )
    assert [rule.key for rule in coverage["partners"].rules] == ["recipients.partner"]
    assert coverage["partners"].rules[0].breaches == (
        Rule.RECIPIENT_PURPOSE_MISMATCH,
        Rule.PARTNER_NOT_CERTIFIED,
    )
    assert [rule.key for rule in coverage["visitors"].rules] == ["visitors.require_rights_notice"]
    assert coverage["rights"].rules == () and not coverage["rights"].enforced
    # Clauses rules name without words come after those with, in the rules' order.
    assert list(coverage) == [
        "c", "l", "partners", "visitors", "rights",
        ERASURE_CLAUSE, UNKNOWN_PURPOSE_CLAUSE, UNKNOWN_RECIPIENT_CLAUSE,
    ]  # fmt: skip
    assert coverage[ERASURE_CLAUSE].clause is None and coverage[ERASURE_CLAUSE].enforced
    assert unenforced_clauses(policy) == ["rights"]


def test_a_visitors_clause_is_enforced_only_while_the_notice_is_required() -> None:
    policy = parse_policy(
        RULES.replace("visitors: {clause: visitors}", "visitors: {require_rights_notice: false}")
        + CLAUSES,
        "p.yaml",
    )

    assert "visitors" in unenforced_clauses(policy)
    assert Rule.VISITOR_NOT_INFORMED not in {b for r in policy_rules(policy) for b in r.breaches}


def test_the_rules_every_policy_has_name_the_clauses_the_verdicts_give() -> None:
    policy = policy_with(CLAUSES)
    shared = Disclosure(
        event_id="e1", subject="s1", instant=10, seq=1, purpose="nowhere", role="customer_contact",
        recipient_kind="stranger", recipient_id="x", data_categories=("email",),
        legal_basis_kind=None, legal_basis_reference=None,
    )  # fmt: skip

    assert {b.rule: b.clause for b in judge_disclosure(policy, shared, [], None)} == {
        Rule.UNKNOWN_PURPOSE: UNKNOWN_PURPOSE_CLAUSE
    }
    breaches = judge_disclosure(policy, shared._replace(purpose="delivery"), [], None)
    assert {b.rule: b.clause for b in breaches} == {
        Rule.RECIPIENT_NOT_PERMITTED: UNKNOWN_RECIPIENT_CLAUSE
    }
    erased = judge_disclosure(policy, shared, [], 5)
    assert [(b.rule, b.clause) for b in erased] == [(Rule.SHARED_AFTER_ERASURE, ERASURE_CLAUSE)]


# -- the reference policy --------------------------------------------------------


def _statement(name: str) -> str:
    """A statement's text with runs of white space made one space, as the policy quotes it."""
    return re.sub(r"[^\S\n]+", " ", (SEEDS / name).read_text("utf-8"))


def test_the_reference_policy_names_every_clause_its_rules_name_with_the_statements_words() -> None:
    policy = load_reference_policy()

    named = {rule.clause for rule in policy_rules(policy)} - {ERASURE_CLAUSE}
    assert named <= set(policy.clauses)
    english = [policy.clause(letter) for letter in "abcdefghijklmn"]
    assert all(clause is not None and set(clause.title) == {"en"} for clause in english)
    partners = policy.clause("Visma partnere")
    assert partners is not None and set(partners.title) == {"no"}
    assert partners.translated_title == {"en": "Visma partners"}


def test_the_reference_policy_lists_the_promises_no_rule_checks() -> None:
    assert unenforced_clauses(load_reference_policy()) == ["consent", "group-purpose-limit"]


def test_the_reference_policy_quotes_the_statements_word_for_word() -> None:
    statements = {"en": _statement("000_ce5caf263d7ab1f8.txt"),
                  "no": _statement("004_c1c61b8d5cb47f49.txt")}  # fmt: skip
    for clause in load_reference_policy().clauses.values():
        for words in (clause.title, clause.text):
            for language, text in words.items():
                for fragment in re.split(r"\n|\[…\]", text):
                    assert fragment.strip() in statements[language], (clause.id, fragment)
