"""The facts verdicts depend on, distilled from accepted events.

A fact holds only what CONTRACT §4 looks at, in compact, comparable form
(instants in microseconds), so a subject's whole history is cheap to keep,
load and re-judge. Facts are named tuples: immutable, and several times
cheaper to build than frozen dataclasses on the hot path. ``seq`` is the ingest order: it breaks ties in event time.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple, TypeAlias

from consent_ledger.core.intake import NEW_TUPLE, ValidEvent
from consent_ledger.core.timestamps import parse_instant
from consent_ledger.core.vocabulary import (
    CONSENT_GIVEN,
    CONSENT_WITHDRAWN,
    DATA_SHARED,
    ERASURE_REQUESTED,
    VISITOR_REGISTERED,
)

_NO_BASIS: Final[dict[str, Any]] = {}


class ConsentChange(NamedTuple):
    """A ``ConsentGiven`` (granted) or ``ConsentWithdrawn`` for one purpose."""

    event_id: str
    subject: str
    instant: int
    seq: int
    purpose: str
    granted: bool
    expires_at: int | None = None


class Disclosure(NamedTuple):
    """A ``DataShared``: who got which data of the subject, why, on what basis."""

    event_id: str
    subject: str
    instant: int
    seq: int
    purpose: str
    role: str
    recipient_kind: str
    recipient_id: str
    data_categories: tuple[str, ...]
    legal_basis_kind: str | None = None
    legal_basis_reference: str | None = None


class VisitorRegistration(NamedTuple):
    """A ``VisitorRegistered``, with the rights notice shown, if any."""

    event_id: str
    subject: str
    instant: int
    seq: int
    rights_notice: str | None


class Erasure(NamedTuple):
    """An ``ErasureRequested``: from ``instant`` on, the subject is forgotten."""

    event_id: str
    subject: str
    instant: int
    seq: int


Fact: TypeAlias = ConsentChange | Disclosure | VisitorRegistration | Erasure


def fact_of(event: ValidEvent, seq: int) -> Fact:
    """Distil a valid event into the fact its verdicts depend on.

    ``tuple.__new__(Fact, fields)`` builds a named tuple in C from all its fields,
    in order: calling the class runs its generated ``__new__``, a Python frame
    that cost a tenth of ``check``'s time once the core is compiled. A test
    checks each kind against the class's own constructor. The objects read are
    typed as dicts: compiled, a ``.get`` or ``[]`` on ``Any`` is a Python method
    call, on a dict a native look-up.
    """
    data: dict[str, Any] = event.body["data"]
    kind = event.type
    if kind == DATA_SHARED:
        recipient: dict[str, Any] = data["recipient"]
        basis: dict[str, Any] = data.get("legal_basis") or _NO_BASIS
        return NEW_TUPLE(
            Disclosure,
            (
                event.id,
                event.subject,
                event.instant,
                seq,
                data["purpose"],
                data["subject_role"],
                recipient["kind"],
                recipient["id"],
                tuple(data["data_categories"]),
                basis.get("kind"),
                basis.get("reference"),
            ),
        )
    if kind == CONSENT_GIVEN:
        expires_at = data.get("expires_at")
        expiry = parse_instant(expires_at) if expires_at is not None else None
        return NEW_TUPLE(
            ConsentChange,
            (event.id, event.subject, event.instant, seq, data["purpose"], True, expiry),
        )
    if kind == CONSENT_WITHDRAWN:
        return NEW_TUPLE(
            ConsentChange,
            (event.id, event.subject, event.instant, seq, data["purpose"], False, None),
        )
    if kind == VISITOR_REGISTERED:
        return NEW_TUPLE(
            VisitorRegistration,
            (event.id, event.subject, event.instant, seq, data.get("rights_notice")),
        )
    if kind == ERASURE_REQUESTED:
        return NEW_TUPLE(Erasure, (event.id, event.subject, event.instant, seq))
    raise ValueError(f"not a valid event type: {kind!r}")  # validate() lets none through
