"""A subject's consents and ledger entries; both answer 410 once it is erased."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from consent_ledger.api import models
from consent_ledger.api.auth import record_access, requires
from consent_ledger.api.errors import ApiError, invalid_parameter
from consent_ledger.api.models import ErrorResponse
from consent_ledger.api.pagination import DEFAULT_LIMIT, encode_cursor
from consent_ledger.api.routes.common import (
    SUBJECT_ERRORS,
    Context,
    Cursor,
    Limit,
    cursor_key,
    format_instant,
    page_of,
    subject_parameter,
)
from consent_ledger.core.consent_records import RecordedConsentChange, consent_records
from consent_ledger.core.consents import PurposeConsent, consents_at, current_consent
from consent_ledger.core.facts import ConsentChange
from consent_ledger.core.intake import parse_json_object
from consent_ledger.core.roles import Permission as P
from consent_ledger.core.timestamps import InvalidTimestamp, format_micros, parse_instant, to_micros
from consent_ledger.integrity.keyring import KeyRing, MasterKeyUnavailable
from consent_ledger.integrity.shredding import KeyUnwrapError, PayloadUnreadable, open_sealed
from consent_ledger.store.api_reads import LedgerView, Row

log = structlog.get_logger(__name__)
router = APIRouter()

_SMALLEST_KEY: Final = (-(2**63), -(2**63))


@router.get(
    "/v1/subjects/{subject:id}/consents",
    dependencies=[requires(P.READ_CONSENTS)],
    summary="The subject's consent status per purpose, now or at an instant",
    response_model=models.SubjectConsents,
    description=(
        "Without `as_of`: the current status of every purpose the subject has a consent "
        "event for (an expiry counts relative to now). With `as_of`: the status at that "
        "instant, from the consent events with event time at or before it. A subject "
        "with no consent events gets an empty list."
    ),
    responses=SUBJECT_ERRORS
    | {
        200: {
            "description": "The consents; with `format=jsonld` ISO/IEC TS 27560 consent "
            "records in DPV JSON-LD",
            "content": {"application/ld+json": {"schema": {"type": "object"}}},
        }
    },
)
async def subject_consents(
    subject: str,
    request: Request,
    context: Context,
    as_of: Annotated[
        str | None,
        Query(
            description=(
                "RFC 3339 instant with an offset, e.g. 2026-03-01T08:00:00Z; "
                "URL-encode a '+' offset as %2B"
            )
        ),
    ] = None,
    format: Annotated[
        Literal["json", "jsonld"],
        Query(
            description=(
                "`jsonld`: the consents as ISO/IEC TS 27560 consent records in the W3C Data "
                "Privacy Vocabulary's JSON-LD form (`application/ld+json`), one per purpose"
            )
        ),
    ] = "json",
) -> Any:
    subject = subject_parameter(subject)
    instant = _as_of(as_of) if as_of is not None else to_micros(datetime.now(UTC))
    if format == "jsonld":
        async with context.ledger().snapshot() as view:
            await _refuse_erased(view, subject)
            rows = await view.consent_changes_until(subject, instant)
        document = consent_records(
            subject,
            consents_at(map(_change, rows), instant),
            (_recorded(row) for row in rows),
            context.policy.in_force_at(instant),
        )
        await record_access(request, [subject])
        return JSONResponse(document, media_type="application/ld+json")
    async with context.ledger().snapshot() as view:
        await _refuse_erased(view, subject)
        current = await view.current_consents(subject) if as_of is None else None
        if current is not None and all(row["occurred_us"] <= instant for row in current):
            statuses = [current_consent(_change(row), instant) for row in current]
        else:  # an instant asked for, or a change dated after now: the projection is ahead
            changes = await view.consent_changes_until(subject, instant)
            statuses = consents_at(map(_change, changes), instant)
    await record_access(request, [subject])
    return models.SubjectConsents(
        subject=subject,
        as_of=format_micros(instant),
        consents=[_consent(status) for status in statuses],
    )


def _as_of(text: str) -> int:
    try:
        return parse_instant(text)
    except InvalidTimestamp as exc:
        hint = (
            " (a '+' in a query string means a space: send the offset as %2B)"
            if " " in text
            else ""
        )
        raise invalid_parameter("as_of", f"{exc}{hint}") from None


def _change(row: Row) -> ConsentChange:
    return ConsentChange(
        row["event_id"],
        "",
        row["occurred_us"],
        row["seq"],
        row["purpose"],
        row["granted"],
        row["expires_us"],
    )


def _recorded(row: Row) -> RecordedConsentChange:
    return RecordedConsentChange(
        row["event_id"], row["purpose"], row["occurred_us"], row["granted"], row["expires_us"],
        row["controller"], row["channel"],
    )  # fmt: skip


def _consent(status: PurposeConsent) -> models.Consent:
    return models.Consent(
        purpose=status.purpose,
        status=status.state,
        since=format_micros(status.since),
        event_id=status.event_id,
        expires_at=format_micros(status.expires_at) if status.expires_at is not None else None,
    )


@router.get(
    "/v1/subjects/{subject:id}/events",
    dependencies=[requires(P.READ_SUBJECT_EVENTS)],
    summary="The subject's ledger entries in event-time order, decrypted",
    responses=SUBJECT_ERRORS | {500: {"model": ErrorResponse}},
)
async def subject_events(
    subject: str,
    request: Request,
    context: Context,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> models.LedgerEntryPage:
    subject = subject_parameter(subject)
    after = cursor_key(cursor, "entries", 2) if cursor else _SMALLEST_KEY
    async with context.ledger().snapshot() as view:
        await _refuse_erased(view, subject)
        rows = await view.subject_entries(subject, (after[0], after[1]), limit + 1)
        wrapped = await view.subject_key(subject) if rows else None
    key = unwrap_subject_key(context.keyring, subject, wrapped)
    await record_access(request, [subject])
    page, next_cursor = page_of(
        rows, limit, lambda row: encode_cursor("entries", row["occurred_us"], row["seq"])
    )
    items = [
        models.LedgerEntry(
            event_id=row["event_id"],
            type=row["type"],
            occurred_at=format_micros(row["occurred_us"]),
            recorded_at=format_instant(row["recorded_at"]),
            partition=row["kafka_partition"],
            offset=row["kafka_offset"],
            leaf_index=row["leaf_index"],
            event=open_event(key, subject, row["event_id"], row["payload"]),
        )
        for row in page
    ]
    return models.LedgerEntryPage(subject=subject, items=items, next_cursor=next_cursor)


def unwrap_subject_key(keyring: KeyRing, subject: str, wrapped: bytes | None) -> bytes | None:
    if wrapped is None:
        return None
    try:
        return keyring.unwrap(subject, wrapped)
    except (KeyUnwrapError, MasterKeyUnavailable) as exc:
        # Not a shredded key (that row is deleted) but the wrong master key, or
        # one a rotation added that this API's key file lacks.
        log.error("subject key does not unwrap: is LEDGER_MASTER_KEY the worker's?", error=str(exc))
        raise ApiError(
            500, "key-unwrap-failed", "the subject's key cannot be unwrapped with this master key"
        ) from None


def open_event(
    key: bytes | None, subject: str, event_id: str, sealed: bytes
) -> dict[str, Any] | None:
    if key is None:
        return None
    try:
        event = parse_json_object(open_sealed(key, subject, event_id, sealed))  # exact numbers
    except PayloadUnreadable:
        log.error("ledger payload does not open", event_id=event_id)
        return None
    return event


async def _refuse_erased(view: LedgerView, subject: str) -> None:
    erasure = await view.erasure(subject)
    if erasure is None:
        return
    erased_at = format_micros(erasure["erased_us"])
    detail = (
        f"The subject asked to be forgotten at {erased_at} (event {erasure['event_id']}); "
        "its personal data in the ledger is unreadable."
    )
    raise ApiError(
        410,
        "subject-erased",
        detail,
        body={"subject": subject, "erased": True, "erased_at": erased_at, "detail": detail},
    )
