"""Consent status per purpose, now and at an instant (what the consents endpoint answers)."""

from __future__ import annotations

import pytest

from consent_ledger.core.consents import ConsentState, PurposeConsent, consents_at, current_consent
from consent_ledger.core.facts import ConsentChange
from consent_ledger.core.timestamps import parse_instant

pytestmark = pytest.mark.unit

T = parse_instant


def given(
    event_id: str, purpose: str, at: str, seq: int, expires: str | None = None
) -> ConsentChange:
    return ConsentChange(
        event_id, "subj-1", T(at), seq, purpose, True, T(expires) if expires else None
    )


def withdrawn(event_id: str, purpose: str, at: str, seq: int) -> ConsentChange:
    return ConsentChange(event_id, "subj-1", T(at), seq, purpose, False)


def test_a_grant_without_expiry_is_granted_since_its_time() -> None:
    change = given("c1", "marketing", "2026-03-01T08:00:00Z", 1)
    assert current_consent(change, T("2026-06-01T00:00:00Z")) == PurposeConsent(
        "marketing", ConsentState.GRANTED, T("2026-03-01T08:00:00Z"), "c1", None
    )


def test_an_expired_grant_is_expired_since_its_expiry() -> None:
    change = given("c1", "marketing", "2026-03-01T08:00:00Z", 1, expires="2026-04-01T00:00:00Z")
    status = current_consent(change, T("2026-04-01T00:00:00Z"))  # expiry <= now: expired
    assert (status.state, status.since) == (ConsentState.EXPIRED, T("2026-04-01T00:00:00Z"))
    assert status.expires_at == T("2026-04-01T00:00:00Z")


def test_a_withdrawal_is_withdrawn_since_its_time() -> None:
    change = withdrawn("w1", "marketing", "2026-03-02T08:00:00Z", 2)
    status = current_consent(change, T("2026-06-01T00:00:00Z"))
    assert (status.state, status.since, status.event_id) == (
        ConsentState.WITHDRAWN,
        T("2026-03-02T08:00:00Z"),
        "w1",
    )


def test_at_an_instant_each_purpose_takes_its_latest_change_at_or_before_it() -> None:
    changes = [
        given("a1", "analytics", "2026-03-01T08:00:00Z", 1, expires="2026-03-10T00:00:00Z"),
        given("m1", "marketing", "2026-03-01T08:00:00Z", 2),
        withdrawn("m2", "marketing", "2026-03-05T08:00:00Z", 3),
        given("n1", "newsletter", "2026-03-20T08:00:00Z", 4),  # after the instant: left out
    ]
    statuses = consents_at(changes, T("2026-03-15T00:00:00Z"))
    assert [(s.purpose, s.state, s.event_id, s.since) for s in statuses] == [
        ("analytics", ConsentState.EXPIRED, "a1", T("2026-03-10T00:00:00Z")),
        ("marketing", ConsentState.WITHDRAWN, "m2", T("2026-03-05T08:00:00Z")),
    ]


def test_a_tie_in_time_goes_to_the_change_ingested_later() -> None:
    changes = [
        withdrawn("w1", "marketing", "2026-03-01T08:00:00Z", 1),
        given("g1", "marketing", "2026-03-01T08:00:00Z", 2),
    ]
    (status,) = consents_at(changes, T("2026-03-01T08:00:00Z"))
    assert (status.state, status.event_id) == (ConsentState.GRANTED, "g1")


def test_no_changes_give_no_statuses() -> None:
    assert consents_at([], T("2026-03-01T08:00:00Z")) == []
