"""CONTRACT §7's table of roles, read from the one place that holds it, and what
binds a publisher: its sources, and eraser for an ErasureRequested."""

from __future__ import annotations

import pytest

from consent_ledger.core.roles import (
    GRANTS,
    Caller,
    Permission,
    Role,
    known_roles,
    parse_roles,
    refused_publication,
    roles_granting,
)

pytestmark = pytest.mark.unit

P = Permission


def caller(*roles: Role, sources: tuple[str, ...] = ()) -> Caller:
    return Caller("test", frozenset(roles), frozenset(sources), "token")


@pytest.mark.parametrize(
    ("permission", "roles"),
    [
        (P.PUBLISH_EVENTS, {Role.PUBLISHER}),
        (P.READ_VIOLATIONS, {Role.ANALYST, Role.PRIVACY_OFFICER, Role.ADMIN}),
        (P.READ_STATS, {Role.ANALYST, Role.OPERATOR, Role.PRIVACY_OFFICER, Role.ADMIN}),
        (P.READ_REPORTS, {Role.ANALYST, Role.PRIVACY_OFFICER, Role.ADMIN}),
        (P.READ_CONSENTS, {Role.ANALYST, Role.PRIVACY_OFFICER, Role.ADMIN}),
        (P.READ_LEDGER, {Role.AUDITOR, Role.PRIVACY_OFFICER, Role.ADMIN}),
        (P.READ_SUBJECT_EVENTS, {Role.PRIVACY_OFFICER, Role.ADMIN}),
        (P.READ_REJECTED, {Role.PRIVACY_OFFICER, Role.ADMIN}),
        (P.READ_SUBJECT_REPORT, {Role.PRIVACY_OFFICER, Role.ADMIN}),
        (P.READ_ACCESS_LOG, {Role.PRIVACY_OFFICER, Role.ADMIN}),
        (P.READ_METRICS, {Role.OPERATOR, Role.PRIVACY_OFFICER, Role.ADMIN}),
        (P.MANAGE_TOKENS, {Role.ADMIN}),
        (P.PUBLISH_POLICY, {Role.ADMIN}),
    ],
)
def test_each_permission_is_held_by_the_roles_of_the_contract(
    permission: Permission, roles: set[Role]
) -> None:
    assert set(roles_granting(permission)) == roles


def test_every_permission_is_held_by_some_role_and_eraser_alone_by_none() -> None:
    assert all(roles_granting(permission) for permission in Permission)
    assert GRANTS[Role.ERASER] == frozenset()


def test_analysts_never_see_payloads_or_rejected_bytes() -> None:
    analyst = GRANTS[Role.ANALYST]
    assert P.READ_SUBJECT_EVENTS not in analyst
    assert P.READ_REJECTED not in analyst
    assert P.READ_SUBJECT_REPORT not in analyst


def test_admin_does_all_but_publishing() -> None:
    assert GRANTS[Role.ADMIN] == frozenset(Permission) - {P.PUBLISH_EVENTS}


def test_the_granting_role_is_the_first_in_table_order() -> None:
    both = caller(Role.ADMIN, Role.ANALYST)
    assert both.granting_role(P.READ_VIOLATIONS) is Role.ANALYST
    assert both.granting_role(P.MANAGE_TOKENS) is Role.ADMIN
    assert caller(Role.ANALYST).granting_role(P.READ_REJECTED) is None


def test_roles_parse_strictly_from_the_cli_and_leniently_from_a_claim() -> None:
    assert parse_roles(["publisher", "eraser"]) == {Role.PUBLISHER, Role.ERASER}
    with pytest.raises(ValueError, match="unknown role superuser"):
        parse_roles(["superuser", "admin"])
    assert known_roles(["admin", "wiki-editors"]) == {Role.ADMIN}


CRM = "urn:system:crm"


def test_a_publisher_publishes_only_its_own_sources() -> None:
    publisher = caller(Role.PUBLISHER, sources=(CRM,))
    assert refused_publication(publisher, [("e-1", "ConsentGiven", CRM)]) is None
    refused = refused_publication(
        publisher, [("e-1", "ConsentGiven", CRM), ("e-2", "DataShared", "urn:system:hr")]
    )
    assert refused is not None
    assert (refused.position, refused.event_id) == (1, "e-2")
    assert "urn:system:hr" in refused.reason and CRM in refused.reason


def test_an_erasure_needs_eraser_as_well() -> None:
    events = [("e-1", "ErasureRequested", CRM)]
    refused = refused_publication(caller(Role.PUBLISHER, sources=(CRM,)), events)
    assert refused is not None and "eraser" in refused.reason
    both = caller(Role.PUBLISHER, Role.ERASER, sources=(CRM,))
    assert refused_publication(both, events) is None
