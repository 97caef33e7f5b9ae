"""Response bodies of the HTTP API (CONTRACT §6), as pydantic models.

They exist so that ``/openapi.json`` and ``/docs`` describe every answer,
errors included. Instants are RFC 3339 strings in UTC (``...Z``), written by
:func:`consent_ledger.core.timestamps.format_micros`, so the API and ``check``
print times the same way.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_INSTANT = "RFC 3339 instant in UTC, e.g. 2026-03-01T08:00:00Z"


class ViolationStatus(StrEnum):
    """Whether a violation stands, or a late event cleared it."""

    OPEN = "open"
    RETRACTED = "retracted"


class ConsentState(StrEnum):
    """The consent status of one purpose at an instant."""

    GRANTED = "granted"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


# -- errors --------------------------------------------------------------------


class ErrorDetail(BaseModel):
    """What went wrong: a stable code for programs and a sentence for people.

    Some errors add fields: ``parameter`` (which query parameter is bad),
    ``limit`` (the body size limit), ``failed`` (which dependencies are down).
    """

    model_config = ConfigDict(extra="allow")

    code: str = Field(examples=["invalid-parameter"])
    message: str = Field(examples=["limit: Input should be less than or equal to 1000"])


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer of the API has this shape (some add fields)."""

    error: ErrorDetail


# -- POST /v1/events -----------------------------------------------------------


class AcceptedEvents(BaseModel):
    """Every event was valid and the broker acknowledged every one."""

    accepted: list[str] = Field(description="The ids of the published events, in request order")


class RejectedEvent(BaseModel):
    """One event of the request that failed a check of CONTRACT §2."""

    index: int = Field(description="0-based position in the request (0 for a single event)")
    reason: Literal["invalid-json", "invalid-envelope", "unknown-type", "invalid-data"]
    detail: str
    event_id: str | None = Field(description="The event's id, when it has a usable one")


class RejectedEvents(BaseModel):
    """At least one event was invalid: nothing was published."""

    error: ErrorDetail
    rejected: list[RejectedEvent]


# -- violations ----------------------------------------------------------------


class ViolationItem(BaseModel):
    """One (event, rule) the ledger found broken, open or retracted."""

    event_id: str
    rule: str
    subject: str
    severity: Literal["critical", "high", "medium"]
    status: ViolationStatus
    clause: str
    explanation: str
    detected_at: str = Field(description=f"When the ledger first found it; {_INSTANT}")
    occurred_at: str = Field(description=f"The event time of the violating event; {_INSTANT}")
    updated_at: str = Field(description=f"When its status last changed; {_INSTANT}")


class ViolationPage(BaseModel):
    items: list[ViolationItem]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page"
    )


# -- subjects ------------------------------------------------------------------


class Consent(BaseModel):
    """The consent status of one purpose."""

    purpose: str
    status: ConsentState
    since: str = Field(
        description=(
            "When this status began: the time of the deciding consent event, or for "
            f"`expired` the expiry; {_INSTANT}"
        )
    )
    event_id: str = Field(description="The consent event that decides the status")
    expires_at: str | None = Field(description=f"The grant's expiry, if it has one; {_INSTANT}")


class SubjectConsents(BaseModel):
    subject: str
    as_of: str = Field(description=f"The instant the statuses hold at; {_INSTANT}")
    consents: list[Consent] = Field(
        description="One entry per purpose with a consent event at or before `as_of`, by purpose"
    )


class SubjectErased(BaseModel):
    """410 Gone: the subject asked to be forgotten and its personal data is unreadable."""

    error: ErrorDetail
    subject: str
    erased: Literal[True] = True
    erased_at: str = Field(description=f"The time of the erasure request; {_INSTANT}")
    detail: str


class LedgerEntry(BaseModel):
    """One accepted event of the subject, where it sits in the ledger, and its content."""

    event_id: str
    type: str
    occurred_at: str = Field(description=f"Event time; {_INSTANT}")
    recorded_at: str = Field(description=f"When the ledger recorded it; {_INSTANT}")
    partition: int = Field(description="Kafka partition, which is also its Merkle log")
    offset: int = Field(description="Kafka offset of the record")
    leaf_index: int = Field(description="Position in its partition's Merkle log")
    event: dict[str, Any] | None = Field(
        description="The event as accepted, decrypted; null when its key is gone"
    )


class LedgerEntryPage(BaseModel):
    subject: str
    items: list[LedgerEntry]
    next_cursor: str | None


# -- rejected ------------------------------------------------------------------


class RejectedRecord(BaseModel):
    """A record the worker refused, kept with its raw bytes (CONTRACT §2)."""

    id: int
    reason: str
    detail: str
    event_id: str | None
    subject: str | None
    partition: int
    offset: int
    recorded_at: str = Field(description=_INSTANT)
    raw: str = Field(description="The record as it came: UTF-8 text, or base64 (`raw_encoding`)")
    raw_encoding: Literal["utf-8", "base64"]


class RejectedPage(BaseModel):
    items: list[RejectedRecord]
    next_cursor: str | None


# -- operations ----------------------------------------------------------------


class Stats(BaseModel):
    """Counts over ``ledger.events``: every record read is in exactly one of the
    first three."""

    accepted: int
    duplicates: int
    rejected: int
    violations_open: int
    violations_retracted: int
    lag: int | None = Field(
        description=(
            "Records on the topic the worker has not processed yet; null when the broker "
            "cannot be asked"
        )
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str] = Field(examples=[{"database": "ok", "broker": "ok"}])


class NotReady(BaseModel):
    error: ErrorDetail
    checks: dict[str, str] = Field(
        examples=[{"database": "ok", "broker": "KafkaConnectionError: Unable to bootstrap"}]
    )
