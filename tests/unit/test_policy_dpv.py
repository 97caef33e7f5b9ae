"""Standard vocabularies in the policy (CONTRACT §9): `dpv` on purposes and
recipient kinds is a W3C DPV concept, checked when the policy is loaded; the
reference policy maps every purpose and every recipient kind."""

from __future__ import annotations

import re

import pytest

from consent_ledger.core.policy import PolicyError, load_reference_policy, parse_policy

BASE = """
version: 1
purposes:
  marketing: {clause: l, basis: consent, roles: [user]%s}
recipients:
  partner: {clause: p, certified: [a]%s}
"""


def test_dpv_concepts_are_kept_as_written() -> None:
    policy = parse_policy(
        BASE % (", dpv: dpv:Marketing", ", dpv: 'https://w3id.org/dpv#ThirdParty'")
    )
    assert policy.purposes["marketing"].dpv == "dpv:Marketing"
    assert policy.recipients["partner"].dpv == "https://w3id.org/dpv#ThirdParty"
    assert parse_policy(BASE % ("", "")).purposes["marketing"].dpv is None


@pytest.mark.parametrize(
    ("purpose", "recipient", "key"),
    [
        (", dpv: Marketing", "", "purposes.marketing.dpv"),
        (", dpv: 'dpv:'", "", "purposes.marketing.dpv"),
        (", dpv: 'schema:Marketing'", "", "purposes.marketing.dpv"),
        ("", ", dpv: 'dpv:third party'", "recipients.partner.dpv"),
        ("", ", dpv: [dpv:ThirdParty]", "recipients.partner.dpv"),
    ],
)
def test_a_dpv_value_that_is_no_concept_is_refused_naming_the_key(
    purpose: str, recipient: str, key: str
) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy(BASE % (purpose, recipient), "p.yaml")
    assert refused.value.key == key
    assert str(refused.value).startswith(f"p.yaml: {key}: ")


def test_the_reference_policy_maps_every_purpose_and_recipient_kind_to_dpv() -> None:
    policy = load_reference_policy()
    concept = re.compile(r"dpv:[A-Z][A-Za-z]+")
    assert all(concept.fullmatch(p.dpv or "") for p in policy.purposes.values())
    assert all(concept.fullmatch(r.dpv or "") for r in policy.recipients.values())
    assert policy.purposes["marketing"].dpv == "dpv:Marketing"
    assert policy.recipients["public_authority"].dpv == "dpv:Authority"
    # Consent-based purposes are named as what they are, never the generic dpv:Purpose.
    assert "dpv:Purpose" not in {p.dpv for p in policy.purposes.values()}
