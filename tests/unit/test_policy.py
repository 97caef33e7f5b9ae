"""The policy file of CONTRACT §3: the reference policy, and bad files refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from consent_ledger.core.policy import (
    BASES,
    Policy,
    PolicyError,
    load_policy,
    load_reference_policy,
    parse_policy,
)

pytestmark = pytest.mark.unit

SCENARIO_POLICY = Path(__file__).resolve().parents[1] / "data" / "scenarios" / "policy.yaml"

MINIMAL = """\
purposes:
  delivery: {clause: "c", basis: contract, roles: [customer_contact, user]}
  marketing: {clause: "l", basis: consent, roles: [customer_contact, user]}
recipients:
  group_company:
    allowed: [visma-software-as]
  partner:
    certified: [northwind-consulting]
    purposes: [delivery]
"""


def purposes_of(policy: Policy) -> dict[str, tuple[str, str, frozenset[str]]]:
    return {
        name: (purpose.clause, purpose.basis, purpose.roles)
        for name, purpose in policy.purposes.items()
    }


def recipient_rules_of(policy: Policy) -> dict[str, tuple[frozenset[str] | None, ...]]:
    return {
        kind: (
            rule.allowed,
            rule.certified,
            rule.requires_legal_basis,
            rule.data_categories,
            rule.purposes,
        )
        for kind, rule in policy.recipients.items()
    }


def test_the_reference_policy_is_the_scenarios_policy() -> None:
    reference = load_reference_policy()
    scenarios = load_policy(SCENARIO_POLICY)

    assert purposes_of(reference) == purposes_of(scenarios)
    assert recipient_rules_of(reference) == recipient_rules_of(scenarios)
    assert reference.require_rights_notice is scenarios.require_rights_notice is True
    assert reference.roles == scenarios.roles
    assert reference.name == scenarios.name


def test_the_reference_policy_says_what_the_privacy_statement_says() -> None:
    policy = load_reference_policy()
    consent_based = {name for name, p in policy.purposes.items() if p.basis == "consent"}
    assert consent_based == {"cloud_access", "marketing", "skills_analysis", "candidate_evaluation"}
    assert policy.purposes["skills_analysis"].roles == {"jobseeker"}
    assert policy.purposes["premises_security"].roles == {"visitor"}
    assert set(policy.recipients) == {
        "group_company",
        "partner",
        "public_authority",
        "acquirer",
        "public_forum",
    }
    assert policy.recipients["public_authority"].requires_legal_basis == {
        "court_order",
        "legal_order",
    }
    assert policy.recipients["acquirer"].requires_legal_basis == {"nda"}
    assert policy.recipients["public_forum"].data_categories == {"forum_post"}
    assert policy.recipients["partner"].purposes == {"delivery"}
    assert policy.recipients["group_company"].purposes is None  # bound by the purpose, any purpose
    assert policy.recipients["public_authority"].clause == "Offentlige myndigheter"
    assert policy.visitors_clause == "visitors"


def test_a_minimal_policy_and_its_defaults() -> None:
    policy = parse_policy(MINIMAL, "minimal.yaml")
    assert policy.require_rights_notice is True
    assert policy.purposes["marketing"].needs_consent
    assert not policy.purposes["delivery"].needs_consent
    assert policy.recipients["group_company"].allowed == {"visma-software-as"}
    assert policy.recipients["group_company"].purposes is None
    assert policy.recipients["partner"].purposes == {"delivery"}


def test_visitors_may_be_told_nothing() -> None:
    policy = parse_policy(MINIMAL + "visitors:\n  require_rights_notice: false\n")
    assert policy.require_rights_notice is False


def test_numeric_ids_in_lists_are_ids() -> None:
    """YAML reads `2024` as a number; the ids it is compared with are strings."""
    policy = parse_policy(
        MINIMAL.replace("[visma-software-as]", "[visma-software-as, 2024]"), "numbers.yaml"
    )
    assert policy.recipients["group_company"].allowed == {"visma-software-as", "2024"}


def test_every_basis_of_the_contract_is_known() -> None:
    assert set(BASES) == {"consent", "contract", "legitimate_interest", "legal_obligation"}
    for basis in BASES:
        policy = parse_policy(MINIMAL.replace("basis: contract", f"basis: {basis}"))
        assert policy.purposes["delivery"].basis == basis


def replaced(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new)


BAD_POLICIES = [
    pytest.param("purposes: {delivery: [\n", "", "not valid YAML", id="YAML syntax error"),
    pytest.param("purposes:\n  delivery: {clause: c\n", "", "line", id="unclosed flow mapping"),
    pytest.param("", "", "empty", id="empty file"),
    pytest.param("# only a comment\n", "", "empty", id="only comments"),
    pytest.param("- purposes\n- recipients\n", "(top level)", "must be a mapping", id="a list"),
    pytest.param("just text\n", "(top level)", "must be a mapping", id="a string"),
    pytest.param(MINIMAL + "purpose: {}\n", "purpose", "unknown key", id="unknown top-level key"),
    pytest.param("recipients: {}\n", "purposes", "missing", id="no purposes"),
    pytest.param("purposes: [delivery]\n", "purposes", "must be a mapping", id="purposes a list"),
    pytest.param(
        replaced("basis: contract, ", ""),
        "purposes.delivery.basis",
        "missing",
        id="purpose missing basis",
    ),
    pytest.param(
        replaced('clause: "c", ', ""),
        "purposes.delivery.clause",
        "missing",
        id="purpose missing clause",
    ),
    pytest.param(
        replaced(", roles: [customer_contact, user]}\n  marketing", "}\n  marketing"),
        "purposes.delivery.roles",
        "missing",
        id="purpose missing roles",
    ),
    pytest.param(
        replaced("basis: consent", "basis: consnet"),
        "purposes.marketing.basis",
        "'consnet'",
        id="bad basis value",
    ),
    pytest.param(
        replaced("basis: consent", "basis: Consent"),
        "purposes.marketing.basis",
        "not one of",
        id="basis in the wrong case",
    ),
    pytest.param(
        replaced("basis: consent, roles: [customer_contact, user]", "basis: consent, roles: user"),
        "purposes.marketing.roles",
        "must be a list",
        id="roles not a list",
    ),
    pytest.param(
        replaced(
            "roles: [customer_contact, user]}\n  marketing", "roles: [user, ceo]}\n  marketing"
        ),
        "purposes.delivery.roles[1]",
        "'ceo'",
        id="role not known",
    ),
    pytest.param(
        "roles: [user]\n" + MINIMAL,
        "purposes.delivery.roles[0]",
        "'customer_contact'",
        id="role outside the policy's own roles",
    ),
    pytest.param(
        "roles: [user, admin]\n" + MINIMAL, "roles[1]", "'admin'", id="top-level role not known"
    ),
    pytest.param(
        replaced('{clause: "c", basis', '{clause: "c", legal: yes, basis'),
        "purposes.delivery.legal",
        "unknown key",
        id="unknown key in a purpose",
    ),
    pytest.param(
        replaced("certified:", "certifed:"),
        "recipients.partner.certifed",
        "unknown key",
        id="typo certifed",
    ),
    pytest.param(
        replaced(
            "allowed: [visma-software-as]", "allowed: [visma-software-as]\n    certified: [x]"
        ),
        "recipients.group_company.certified",
        "no effect",
        id="certified on a group company",
    ),
    pytest.param(
        MINIMAL + "  public_forum:\n    data_categories: [forum_post]\n    allowed: [x]\n",
        "recipients.public_forum.allowed",
        "no effect",
        id="allowed on a public forum",
    ),
    pytest.param(
        MINIMAL + "  data_broker:\n    requires_legal_basis: [nda]\n",
        "recipients.data_broker.requires_legal_basis",
        "no effect",
        id="a list key on a kind without step 5",
    ),
    pytest.param(
        replaced("    allowed: [visma-software-as]\n", "    purposes: [delivery]\n"),
        "recipients.group_company.allowed",
        "missing",
        id="group_company without allowed",
    ),
    pytest.param(
        replaced("    certified: [northwind-consulting]\n", ""),
        "recipients.partner.certified",
        "missing",
        id="partner without certified",
    ),
    pytest.param(
        MINIMAL + "  public_authority:\n    purposes: [delivery]\n",
        "recipients.public_authority.requires_legal_basis",
        "missing",
        id="public_authority without requires_legal_basis",
    ),
    pytest.param(
        replaced("purposes: [delivery]", "purposes: [delivery, analytics]"),
        "recipients.partner.purposes[1]",
        "'analytics'",
        id="recipient purposes naming an unknown purpose",
    ),
    pytest.param(
        replaced("allowed: [visma-software-as]", "allowed: visma-software-as"),
        "recipients.group_company.allowed",
        "must be a list",
        id="allowed not a list",
    ),
    pytest.param(
        replaced("allowed: [visma-software-as]", "allowed: [visma-software-as, '']"),
        "recipients.group_company.allowed[1]",
        "non-empty",
        id="blank id in a list",
    ),
    pytest.param(
        MINIMAL + "visitors:\n  require_rights_notice: sometimes\n",
        "visitors.require_rights_notice",
        "true or false",
        id="require_rights_notice not a bool",
    ),
    pytest.param(
        MINIMAL + "visitors:\n  require_rights_notice: 'true'\n",
        "visitors.require_rights_notice",
        "true or false",
        id="require_rights_notice a quoted string",
    ),
    pytest.param(
        MINIMAL + "visitors:\n  require_notice: true\n",
        "visitors.require_notice",
        "unknown key",
        id="unknown key under visitors",
    ),
    pytest.param(
        MINIMAL + "visitors: [require_rights_notice]\n",
        "visitors",
        "must be a mapping",
        id="visitors a list",
    ),
]


@pytest.mark.parametrize(("text", "key", "problem"), BAD_POLICIES)
def test_a_bad_policy_is_refused_naming_file_key_and_problem(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(PolicyError) as refused:
        load_policy(path)

    message = str(refused.value)
    assert message.startswith(f"{path}: ")
    assert refused.value.source == str(path)
    assert refused.value.key == key
    if key:
        assert f": {key}: " in message
    assert problem in message
    assert refused.value.problem.strip()


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "policy.yaml"
    with pytest.raises(PolicyError) as refused:
        load_policy(path)
    assert str(path) in str(refused.value)
    assert "cannot read" in str(refused.value)


def test_a_folder_is_no_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as refused:
        load_policy(tmp_path)
    assert str(tmp_path) in str(refused.value)


def test_a_yaml_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(MINIMAL + "  partner2: {certified: [x\n", encoding="utf-8")
    with pytest.raises(PolicyError) as refused:
        load_policy(path)
    assert "broken.yaml" in str(refused.value)
    assert "line " in str(refused.value)


def test_parse_policy_names_its_source() -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy("purposes: 5\n", "inline-policy")
    assert str(refused.value) == "inline-policy: purposes: must be a mapping, got 5"


def test_policy_error_is_a_value_error() -> None:
    assert issubclass(PolicyError, ValueError)
