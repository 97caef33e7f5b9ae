"""A subject's consent status per purpose, now or at an instant: what
``GET /v1/subjects/{subject}/consents`` answers (docs/CONTRACT.md §4 defines the
status; :func:`consent_ledger.core.verdicts.consent_status_at` decides it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from enum import StrEnum
from typing import NamedTuple

from consent_ledger.core.facts import ConsentChange
from consent_ledger.core.verdicts import Rule, consent_status_at


class ConsentState(StrEnum):
    """The consent status of one purpose at an instant."""

    GRANTED = "granted"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


class PurposeConsent(NamedTuple):
    """One purpose's status, the instant it began (for ``expired`` the expiry) and
    the consent event that decides it."""

    purpose: str
    state: ConsentState
    since: int
    event_id: str
    expires_at: int | None


def current_consent(latest: ConsentChange, now: int) -> PurposeConsent:
    """The status ``now`` that the purpose's latest consent change gives, when no
    change is dated after ``now``."""
    expires_at = latest.expires_at
    if not latest.granted:
        state, since = ConsentState.WITHDRAWN, latest.instant
    elif expires_at is not None and expires_at <= now:
        state, since = ConsentState.EXPIRED, expires_at
    else:
        state, since = ConsentState.GRANTED, latest.instant
    return PurposeConsent(latest.purpose, state, since, latest.event_id, expires_at)


def consents_at(changes: Iterable[ConsentChange], instant: int) -> list[PurposeConsent]:
    """Status per purpose at ``instant``, sorted by purpose, from changes sorted by
    (purpose, instant, seq). A purpose with no change at or before the instant is
    left out: there is nothing to report for it yet."""
    by_purpose: dict[str, list[ConsentChange]] = defaultdict(list)
    for change in changes:
        by_purpose[change.purpose].append(change)
    consents = []
    for purpose, purpose_changes in sorted(by_purpose.items()):
        decision = consent_status_at(purpose_changes, instant)
        decided = decision.decided_by
        if decided is None:
            continue
        if decision.rule is Rule.CONSENT_WITHDRAWN:
            state, since = ConsentState.WITHDRAWN, decided.instant
        elif decision.rule is Rule.CONSENT_EXPIRED:
            state, since = ConsentState.EXPIRED, decided.expires_at or decided.instant
        else:
            state, since = ConsentState.GRANTED, decided.instant
        consents.append(PurposeConsent(purpose, state, since, decided.event_id, decided.expires_at))
    return consents
