"""The endpoints of CONTRACT §6. Handlers are thin: parse and check the
request, read through :mod:`.queries` or publish through :mod:`.broker`, and
shape the answer with :mod:`.models`.
"""

from __future__ import annotations

import asyncio
import base64
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter

from consent_ledger.api import models
from consent_ledger.api.broker import (
    BROKER_TIMEOUT_S,
    BrokerUnavailable,
    Publisher,
    broker_answers,
    consumer_lag,
    log_end_offsets,
)
from consent_ledger.api.errors import ApiError, error_body, invalid_parameter
from consent_ledger.api.metrics import CONTENT_TYPE, Exposition, RequestCounts
from consent_ledger.api.models import ErrorResponse
from consent_ledger.api.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
)
from consent_ledger.api.queries import LedgerReader, LedgerView, Row
from consent_ledger.core.events import Event
from consent_ledger.core.facts import ConsentChange
from consent_ledger.core.intake import (
    InvalidJson,
    Rejection,
    ValidEvent,
    compact_json,
    parse_json,
    parse_json_object,
    validate,
    validate_parsed,
)
from consent_ledger.core.policy import PolicyVersions
from consent_ledger.core.timestamps import InvalidTimestamp, format_micros, parse_instant, to_micros
from consent_ledger.core.verdicts import Rule, consent_status_at
from consent_ledger.ledger.audit import NotFound
from consent_ledger.ledger.checkpoints import SignedCheckpoint, key_id, public_key_pem
from consent_ledger.ledger.keyring import KeyRing
from consent_ledger.ledger.shredding import KeyUnwrapError, PayloadUnreadable, open_sealed
from consent_ledger.settings import Settings

log = structlog.get_logger(__name__)

_SMALLEST_KEY: Final = (-(2**63), -(2**63))
_READY_TIMEOUT_S: Final = BROKER_TIMEOUT_S


@dataclass(slots=True)
class ApiContext:
    """What the handlers share: configuration and the adapters the factory wired."""

    settings: Settings
    policy: PolicyVersions
    keyring: KeyRing
    publisher: Publisher
    requests: RequestCounts = field(default_factory=RequestCounts)
    reader: LedgerReader | None = None
    public_key: Ed25519PublicKey | None = None  # of the checkpoint signing key, if configured

    def ledger(self) -> LedgerReader:
        if self.reader is None:  # only when the app is served without its lifespan
            raise ApiError(503, "not-started", "the API has no database connection yet")
        return self.reader


def api_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(api_context)]
Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page, at most {MAX_LIMIT}")
]
Cursor = Annotated[
    str | None, Query(description="`next_cursor` of the previous page; omit for the first page")
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A bad parameter, named in `error.parameter`"},
    503: {"model": ErrorResponse, "description": "The database cannot be reached"},
}
_SUBJECT_ERRORS: dict[int | str, dict[str, Any]] = _ERRORS | {
    410: {"model": models.SubjectErased, "description": "The subject was erased"}
}

router = APIRouter()


# -- POST /v1/events -----------------------------------------------------------

_EVENT_OR_BATCH: TypeAdapter[Any] = TypeAdapter(Event | list[Event])


def event_body_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The request body's JSON Schema and the component schemas it refers to."""
    schema = _EVENT_OR_BATCH.json_schema(ref_template="#/components/schemas/{model}")
    components = schema.pop("$defs", {})
    return schema, components


_BODY_SCHEMA, EVENT_COMPONENTS = event_body_schema()
_MEDIA_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
)


@router.post(
    "/v1/events",
    status_code=202,
    summary="Publish events to the ledger",
    description=(
        "One CloudEvent, or a JSON array of them. Every event is checked as intake "
        "does (CONTRACT §2, all but `id-conflict`, which the worker decides). All "
        "valid: all are published to the events topic, and the answer comes after "
        "the broker acknowledged them. Any invalid: nothing is published (422). "
        "Publishing is safe to retry: an event delivered twice is counted as a duplicate."
    ),
    responses={
        400: {"model": ErrorResponse, "description": "The body is empty, or an empty array"},
        413: {"model": ErrorResponse, "description": "The body is larger than the limit"},
        422: {"model": models.RejectedEvents, "description": "Invalid events; none published"},
        503: {"model": ErrorResponse, "description": "The broker did not acknowledge"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {media: {"schema": _BODY_SCHEMA} for media in _MEDIA_TYPES},
        }
    },
)
async def publish_events(request: Request, context: Context) -> models.AcceptedEvents:
    raw = await _read_body(request, context.settings.max_request_bytes)
    if not raw.strip():
        raise ApiError(400, "empty-body", "the body is empty; send an event or an array of them")
    outcomes = _checked_events(raw)
    if not outcomes:
        raise ApiError(400, "empty-batch", "the array holds no events")
    valid: list[ValidEvent] = []
    rejected: list[models.RejectedEvent] = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Rejection):
            rejected.append(
                models.RejectedEvent(
                    index=index,
                    reason=outcome.reason.value,  # type: ignore[arg-type]  # never id-conflict here
                    detail=outcome.detail,
                    event_id=outcome.event_id,
                )
            )
        else:
            valid.append(outcome)
    if rejected:
        raise ApiError(
            422,
            "invalid-events",
            f"{len(rejected)} of {len(outcomes)} events are invalid; none was published",
            body={"rejected": [item.model_dump() for item in rejected]},
        )
    messages = [
        (event.subject.encode("utf-8", "backslashreplace"), compact_json(event.body), ())
        for event in valid
    ]
    try:
        await context.publisher.publish(context.settings.events_topic, messages)
    except BrokerUnavailable as exc:
        log.warning("events not published", events=len(messages), error=str(exc))
        raise ApiError(
            503,
            "broker-unavailable",
            f"{exc}; retry later (events already delivered are then counted as duplicates)",
        ) from exc
    log.info("events published", events=len(messages), topic=context.settings.events_topic)
    return models.AcceptedEvents(accepted=[event.id for event in valid])


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it exceeds ``limit`` bytes."""
    too_large = ApiError(
        413,
        "payload-too-large",
        f"the request body is larger than {limit} bytes; send fewer events per request",
        details={"limit": limit},
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _checked_events(raw: bytes) -> list[ValidEvent | Rejection]:
    """Each event of a body checked as intake checks a record: the elements of an
    array, or else the body as one event, which is invalid-json when it is not
    JSON at all (parsed exactly as the worker's intake parses records)."""
    try:
        document = parse_json(raw)
    except InvalidJson:
        return [validate(raw)]
    bodies = document if isinstance(document, list) else [document]
    return [validate_parsed(body) for body in bodies]


# -- GET /v1/violations --------------------------------------------------------


@router.get(
    "/v1/violations",
    summary="Violations, open and retracted, in the order they were found",
    responses=_ERRORS,
)
async def list_violations(
    context: Context,
    status: Annotated[models.ViolationStatus | None, Query()] = None,
    subject: Annotated[str | None, Query(min_length=1)] = None,
    rule: Annotated[Rule | None, Query()] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> models.ViolationPage:
    (after_id,) = _cursor_key(cursor, "violations", 1) if cursor else (0,)
    async with context.ledger().snapshot() as view:
        rows = await view.violations(
            after_id=after_id,
            limit=limit + 1,
            status=status.value if status else None,
            subject=subject,
            rule=rule.value if rule else None,
        )
    page, next_cursor = _page(rows, limit, lambda row: encode_cursor("violations", row["id"]))
    return models.ViolationPage(items=[_violation(row) for row in page], next_cursor=next_cursor)


def _violation(row: Row) -> models.ViolationItem:
    return models.ViolationItem(
        event_id=row["event_id"],
        rule=row["rule"],
        subject=row["subject"],
        severity=row["severity"],
        status=row["status"],
        clause=row["clause"],
        explanation=row["explanation"],
        detected_at=_instant(row["detected_at"]),
        occurred_at=format_micros(row["occurred_us"]),
        updated_at=_instant(row["updated_at"]),
        policy_version=row["policy_version"],
    )


# -- subjects ------------------------------------------------------------------


@router.get(
    "/v1/subjects/{subject:path}/consents",
    summary="The subject's consent status per purpose, now or at an instant",
    description=(
        "Without `as_of`: the current status of every purpose the subject has a consent "
        "event for (an expiry counts relative to now). With `as_of`: the status at that "
        "instant, from the consent events with event time at or before it. A subject "
        "with no consent events gets an empty list."
    ),
    responses=_SUBJECT_ERRORS,
)
async def subject_consents(
    subject: str,
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
) -> models.SubjectConsents:
    instant = _as_of(as_of) if as_of is not None else to_micros(datetime.now(UTC))
    async with context.ledger().snapshot() as view:
        await _refuse_erased(view, subject)
        current = await view.current_consents(subject) if as_of is None else None
        if current is not None and all(row["occurred_us"] <= instant for row in current):
            consents = [_current_consent(row, instant) for row in current]
        else:  # an instant asked for, or a change dated after now: the projection is ahead
            consents = _consents_at(await view.consent_changes_until(subject, instant), instant)
    return models.SubjectConsents(subject=subject, as_of=format_micros(instant), consents=consents)


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


def _current_consent(row: Row, now: int) -> models.Consent:
    expires_us: int | None = row["expires_us"]
    if not row["granted"]:
        status, since = models.ConsentState.WITHDRAWN, row["occurred_us"]
    elif expires_us is not None and expires_us <= now:
        status, since = models.ConsentState.EXPIRED, expires_us
    else:
        status, since = models.ConsentState.GRANTED, row["occurred_us"]
    return models.Consent(
        purpose=row["purpose"],
        status=status,
        since=format_micros(since),
        event_id=row["event_id"],
        expires_at=format_micros(expires_us) if expires_us is not None else None,
    )


def _consents_at(rows: Iterable[Row], instant: int) -> list[models.Consent]:
    """Status per purpose at ``instant`` from changes sorted by (purpose, occurred_us, seq)."""
    by_purpose: dict[str, list[ConsentChange]] = defaultdict(list)
    for row in rows:
        by_purpose[row["purpose"]].append(
            ConsentChange(
                row["event_id"],
                "",
                row["occurred_us"],
                row["seq"],
                row["purpose"],
                row["granted"],
                row["expires_us"],
            )
        )
    consents = []
    for purpose, changes in sorted(by_purpose.items()):
        decision = consent_status_at(changes, instant)
        decided = decision.decided_by
        if decided is None:  # no change at or before the instant: nothing to report
            continue
        if decision.rule is Rule.CONSENT_WITHDRAWN:
            status, since = models.ConsentState.WITHDRAWN, decided.instant
        elif decision.rule is Rule.CONSENT_EXPIRED:
            status, since = models.ConsentState.EXPIRED, decided.expires_at or decided.instant
        else:
            status, since = models.ConsentState.GRANTED, decided.instant
        consents.append(
            models.Consent(
                purpose=purpose,
                status=status,
                since=format_micros(since),
                event_id=decided.event_id,
                expires_at=format_micros(decided.expires_at)
                if decided.expires_at is not None
                else None,
            )
        )
    return consents


@router.get(
    "/v1/subjects/{subject:path}/events",
    summary="The subject's ledger entries in event-time order, decrypted",
    responses=_SUBJECT_ERRORS | {500: {"model": ErrorResponse}},
)
async def subject_events(
    subject: str, context: Context, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> models.LedgerEntryPage:
    after = _cursor_key(cursor, "entries", 2) if cursor else _SMALLEST_KEY
    async with context.ledger().snapshot() as view:
        await _refuse_erased(view, subject)
        rows = await view.subject_entries(subject, (after[0], after[1]), limit + 1)
        wrapped = await view.subject_key(subject) if rows else None
    key = _subject_key(context.keyring, subject, wrapped)
    page, next_cursor = _page(
        rows, limit, lambda row: encode_cursor("entries", row["occurred_us"], row["seq"])
    )
    items = [
        models.LedgerEntry(
            event_id=row["event_id"],
            type=row["type"],
            occurred_at=format_micros(row["occurred_us"]),
            recorded_at=_instant(row["recorded_at"]),
            partition=row["kafka_partition"],
            offset=row["kafka_offset"],
            leaf_index=row["leaf_index"],
            event=_open_event(key, subject, row["event_id"], row["payload"]),
        )
        for row in page
    ]
    return models.LedgerEntryPage(subject=subject, items=items, next_cursor=next_cursor)


def _subject_key(keyring: KeyRing, subject: str, wrapped: bytes | None) -> bytes | None:
    if wrapped is None:
        return None
    try:
        return keyring.unwrap(subject, wrapped)
    except KeyUnwrapError:
        # Not a shredded key (that row is deleted) but the wrong master key.
        log.error("subject key does not unwrap: is LEDGER_MASTER_KEY the worker's?")
        raise ApiError(
            500, "key-unwrap-failed", "the subject's key cannot be unwrapped with this master key"
        ) from None


def _open_event(
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


# -- GET /v1/rejected ----------------------------------------------------------


@router.get(
    "/v1/rejected",
    summary="Records the worker rejected, with their reasons and raw bytes",
    responses=_ERRORS,
)
async def list_rejected(
    context: Context, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> models.RejectedPage:
    (after_id,) = _cursor_key(cursor, "rejected", 1) if cursor else (0,)
    async with context.ledger().snapshot() as view:
        rows = await view.rejected(after_id=after_id, limit=limit + 1)
    page, next_cursor = _page(rows, limit, lambda row: encode_cursor("rejected", row["id"]))
    return models.RejectedPage(items=[_rejected(row) for row in page], next_cursor=next_cursor)


def _rejected(row: Row) -> models.RejectedRecord:
    raw: bytes = row["raw"]
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return models.RejectedRecord(
        id=row["id"],
        reason=row["reason"],
        detail=row["detail"],
        event_id=row["event_id"],
        subject=row["subject"],
        partition=row["kafka_partition"],
        offset=row["kafka_offset"],
        recorded_at=_instant(row["recorded_at"]),
        raw=text,
        raw_encoding=encoding,  # type: ignore[arg-type]  # one of the two literals
    )


# -- the auditor's endpoints ---------------------------------------------------
#
# Checkpoints and proofs carry no personal data (a leaf covers an event id, a
# Kafka position, a time and the digest of a ciphertext), so an erasure hides
# none of them: an auditor can still prove what the ledger held.

_MAX_ID: Final = 2**63 - 1
CHECKPOINT_ID_HEADER: Final = "Ledger-Checkpoint-Id"

CheckpointNumber = Annotated[int, Path(ge=1, le=_MAX_ID, description="The checkpoint's id")]

_NOT_FOUND_CHECKPOINT: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such checkpoint, or none signed yet"},
}
_INCONSISTENT: dict[int | str, dict[str, Any]] = {
    500: {
        "model": ErrorResponse,
        "description": "The stored ledger disagrees with its signed checkpoints "
        "(`consent-ledger verify` says where)",
    },
}
_INCLUSION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            CHECKPOINT_ID_HEADER: {
                "description": "Id of the checkpoint the proof is against",
                "schema": {"type": "integer"},
            }
        }
    },
    404: {
        "model": ErrorResponse,
        "description": "No such event or checkpoint, or the checkpoint does not cover "
        "the event (yet)",
    },
    **_ERRORS,
    **_INCONSISTENT,
}


def _cadence(settings: Settings) -> str:
    return (
        "checkpoints are signed every LEDGER_CHECKPOINT_INTERVAL_S seconds "
        f"({settings.checkpoint_interval_s:g} s in this API's configuration) "
        "once new entries arrive"
    )


@router.get(
    "/v1/ledger/public-key",
    summary="The Ed25519 public key that signs the checkpoints",
    description=(
        "Pin it once (compare `key_id` out of band), then check every checkpoint and "
        "proof offline with it: `consent-ledger verify-proof PROOF --public-key PEM`."
    ),
    responses={
        404: {
            "model": ErrorResponse,
            "description": "No signing key is configured: checkpoints are not signed here",
        }
    },
)
async def ledger_public_key(context: Context) -> models.PublicKey:
    key = context.public_key
    if key is None:
        raise ApiError(
            404,
            "checkpoints-not-signed",
            "checkpoints are not signed here: this API has no signing key configured "
            "(LEDGER_SIGNING_KEY_FILE)",
        )
    return models.PublicKey(
        key_id=key_id(key), public_key_pem=public_key_pem(key), log_id=context.settings.log_id
    )


@router.get(
    "/v1/ledger/checkpoints",
    summary="Signed checkpoints, newest first",
    description=(
        "Every checkpoint the ledger signed: each commits to every partition's Merkle "
        "tree size and root at one moment."
    ),
    responses=_ERRORS | _INCONSISTENT,
)
async def list_checkpoints(
    context: Context, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> models.CheckpointPage:
    (before_id,) = _cursor_key(cursor, "checkpoints", 1) if cursor else (_MAX_ID,)
    async with context.ledger().snapshot() as view:
        rows = await view.checkpoints(before_id=min(before_id, _MAX_ID), limit=limit + 1)
    page, next_cursor = _page(rows, limit, lambda row: encode_cursor("checkpoints", row["id"]))
    items = [_stored_checkpoint(row["id"], _parse_checkpoint(row)) for row in page]
    return models.CheckpointPage(items=items, next_cursor=next_cursor)


@router.get(
    "/v1/ledger/checkpoints/latest",
    summary="The newest signed checkpoint",
    responses=_ERRORS | _NOT_FOUND_CHECKPOINT | _INCONSISTENT,
)
async def latest_checkpoint(context: Context) -> models.StoredCheckpoint:
    async with context.ledger().snapshot() as view:
        stored = await _read_checkpoint(view, None)
    if stored is None:
        raise ApiError(
            404, "no-checkpoint", f"no checkpoint has been signed yet; {_cadence(context.settings)}"
        )
    return _stored_checkpoint(*stored)


@router.get(
    "/v1/ledger/checkpoints/{checkpoint_id}",
    summary="One signed checkpoint by id",
    responses=_ERRORS | _NOT_FOUND_CHECKPOINT | _INCONSISTENT,
)
async def get_checkpoint(
    checkpoint_id: CheckpointNumber, context: Context
) -> models.StoredCheckpoint:
    async with context.ledger().snapshot() as view:
        stored = await _read_checkpoint(view, checkpoint_id)
    if stored is None:
        raise ApiError(404, "unknown-checkpoint", f"no checkpoint {checkpoint_id}")
    return _stored_checkpoint(*stored)


@router.get(
    "/v1/ledger/proofs/inclusion/{event_id:path}",
    summary="Proof that an event's ledger entry is in a signed checkpoint's tree",
    description=(
        "The inclusion proof of the event's ledger entry against a checkpoint (default: "
        "the latest). The body is the self-contained proof document: save it as it is "
        "and check it offline with `consent-ledger verify-proof FILE --public-key PEM`. "
        f"The checkpoint's id is in the `{CHECKPOINT_ID_HEADER}` header (not in the "
        "body, which the verifier checks field by field). Erased subjects' entries are "
        "proved too: an entry holds no personal data."
    ),
    responses=_INCLUSION_RESPONSES,
)
async def inclusion_proof(
    event_id: str,
    context: Context,
    response: Response,
    checkpoint: Annotated[
        int | None,
        Query(
            ge=1,
            le=_MAX_ID,
            description="Id of the checkpoint to prove against; omit for the latest",
        ),
    ] = None,
) -> models.InclusionProof:
    async with context.ledger().snapshot() as view:
        position = await view.entry_position(event_id)
        if position is None:
            raise ApiError(
                404,
                "unknown-event",
                f"no ledger entry with event id {event_id!r}: the ledger has not accepted "
                "such an event",
            )
        stored = await _read_checkpoint(view, checkpoint)
        if stored is None and checkpoint is not None:
            raise ApiError(404, "unknown-checkpoint", f"no checkpoint {checkpoint}")
        if stored is None:
            raise ApiError(
                404,
                "not-yet-checkpointed",
                f"event {event_id!r} is not covered by a checkpoint yet: none has been "
                f"signed; {_cadence(context.settings)}, retry then",
            )
        number, signed = stored
        head = signed.checkpoint.tree_head(position["kafka_partition"])
        if head is None or position["leaf_index"] >= head.size:
            if checkpoint is not None:
                raise ApiError(
                    404,
                    "not-in-checkpoint",
                    f"event {event_id!r} is not covered by checkpoint {number}: it was "
                    "recorded after that checkpoint was signed; ask a later checkpoint, "
                    "or omit `checkpoint` for the latest",
                    details={"checkpoint_id": number},
                )
            raise ApiError(
                404,
                "not-yet-checkpointed",
                f"event {event_id!r} is not covered by a checkpoint yet: it was recorded "
                f"after the latest, checkpoint {number}, was signed; "
                f"{_cadence(context.settings)}, retry then",
                details={"checkpoint_id": number},
            )
        try:
            document = await view.inclusion_proof(event_id, number)
        except NotFound as exc:  # not reached: the snapshot saw both a moment ago
            raise ApiError(404, "not-found", str(exc)) from None
        except ValueError as exc:
            raise _inconsistent(f"no inclusion proof of {event_id!r}", exc) from None
    document.pop("checkpoint_id", None)
    response.headers[CHECKPOINT_ID_HEADER] = str(number)
    return models.InclusionProof.model_validate(document)


@router.get(
    "/v1/ledger/proofs/consistency",
    summary="Proof that a later checkpoint extends an earlier one",
    description=(
        "For every partition of checkpoint `from`, the RFC 9162 consistency proof that "
        "its log in checkpoint `to` extends it, nothing rewritten. The body is the "
        "self-contained proof document: check it offline with "
        "`consent-ledger verify-proof FILE --public-key PEM`."
    ),
    responses={
        404: {"model": ErrorResponse, "description": "No checkpoint with one of the ids"},
    }
    | _ERRORS
    | _INCONSISTENT,
)
async def consistency_proof(
    context: Context,
    old_id: Annotated[
        int, Query(alias="from", ge=1, le=_MAX_ID, description="Id of the older checkpoint")
    ],
    new_id: Annotated[
        int, Query(alias="to", ge=1, le=_MAX_ID, description="Id of the newer checkpoint")
    ],
) -> models.ConsistencyProof:
    if old_id > new_id:
        raise invalid_parameter(
            "from",
            f"checkpoint {old_id} is newer than checkpoint {new_id}: `from` must be at most `to`",
        )
    async with context.ledger().snapshot() as view:
        try:
            document = await view.consistency_proof(old_id, new_id)
        except NotFound as exc:
            raise ApiError(404, "unknown-checkpoint", str(exc)) from None
        except ValueError as exc:
            raise _inconsistent(
                f"no consistency proof from checkpoint {old_id} to {new_id}", exc
            ) from None
    return models.ConsistencyProof.model_validate(document)


async def _read_checkpoint(
    view: LedgerView, checkpoint_id: int | None
) -> tuple[int, SignedCheckpoint] | None:
    try:
        return await view.checkpoint(checkpoint_id)
    except ValueError as exc:
        what = "the latest checkpoint" if checkpoint_id is None else f"checkpoint {checkpoint_id}"
        raise _inconsistent(f"{what} is not a valid signed checkpoint", exc) from None


def _parse_checkpoint(row: Row) -> SignedCheckpoint:
    try:
        return SignedCheckpoint.from_json(row["document"])
    except ValueError as exc:
        raise _inconsistent(
            f"checkpoint {row['id']} is not a valid signed checkpoint", exc
        ) from None


def _stored_checkpoint(number: int, signed: SignedCheckpoint) -> models.StoredCheckpoint:
    return models.StoredCheckpoint(
        id=number, checkpoint=models.SignedCheckpoint.model_validate(signed.to_json_dict())
    )


def _inconsistent(what: str, exc: ValueError) -> ApiError:
    log.error("ledger inconsistent", problem=what, error=str(exc))
    return ApiError(
        500,
        "ledger-inconsistent",
        f"{what}: {exc}; `consent-ledger verify` checks the stored ledger against its checkpoints",
    )


# -- operations ----------------------------------------------------------------


@router.get("/v1/stats", summary="Counts of records, violations and the worker's lag")
async def stats(context: Context) -> models.Stats:
    topic = context.settings.events_topic
    async with context.ledger().snapshot() as view:
        totals = await view.position_totals(topic)
        by_status = await view.violations_by_status()
        next_offsets = await view.next_offsets(topic)
    # Asked after the database, so the lag is never below the truth.
    log_end = await log_end_offsets(context.settings.kafka_bootstrap, topic)
    lag = sum(consumer_lag(log_end, next_offsets).values()) if log_end is not None else None
    return models.Stats(
        accepted=totals["accepted"],
        duplicates=totals["duplicates"],
        rejected=totals["rejected"],
        violations_open=by_status.get("open", 0),
        violations_retracted=by_status.get("retracted", 0),
        lag=lag,
    )


@router.get("/healthz", summary="The process is alive")
async def healthz() -> models.Health:
    return models.Health()


@router.get(
    "/readyz",
    summary="The database and the broker answer",
    responses={503: {"model": models.NotReady, "description": "Which dependency failed"}},
)
async def readyz(context: Context) -> Response:
    async def database() -> None:
        await asyncio.wait_for(context.ledger().ping(), _READY_TIMEOUT_S)

    async def broker() -> None:
        if not context.settings.kafka_bootstrap:
            raise BrokerUnavailable("LEDGER_KAFKA_BOOTSTRAP is not set")
        await broker_answers(context.settings.kafka_bootstrap, _READY_TIMEOUT_S)

    names = ("database", "broker")
    outcomes = await asyncio.gather(database(), broker(), return_exceptions=True)
    checks = {
        name: "ok" if outcome is None else _failure(outcome)
        for name, outcome in zip(names, outcomes, strict=True)
    }
    failed = [name for name, check in checks.items() if check != "ok"]
    if failed:
        body = error_body("not-ready", f"not ready: {', '.join(failed)} failed", failed=failed)
        return JSONResponse({**body, "checks": checks}, status_code=503)
    return JSONResponse(models.Readiness(checks=checks).model_dump())


def _failure(outcome: BaseException | None) -> str:
    if isinstance(outcome, ApiError):
        return outcome.message
    if isinstance(outcome, TimeoutError):
        return f"no answer within {_READY_TIMEOUT_S:g} s"
    return f"{type(outcome).__name__}: {outcome}"


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
async def metrics(context: Context) -> Response:
    topic = context.settings.events_topic
    async with context.ledger().snapshot() as view:
        by_type = await view.entries_by_type()
        by_reason = await view.rejected_by_reason()
        by_rule = await view.violations_by_rule_and_status()
        totals = await view.position_totals(topic)
        next_offsets = await view.next_offsets(topic)
        batch_times = await view.batch_times(topic)
    log_end = await log_end_offsets(context.settings.kafka_bootstrap, topic)
    out = Exposition()
    out.family(
        "consent_ledger_events",
        "gauge",
        "Accepted events in the ledger, by event type.",
        (({"type": kind}, count) for kind, count in by_type.items()),
    )
    out.family(
        "consent_ledger_rejected_events",
        "gauge",
        "Rejected records kept, by reason.",
        (({"reason": reason}, count) for reason, count in by_reason.items()),
    )
    out.family(
        "consent_ledger_violations",
        "gauge",
        "Violations by rule and status.",
        (({"rule": row["rule"], "status": row["status"]}, row["n"]) for row in by_rule),
    )
    out.family(
        "consent_ledger_records_total",
        "counter",
        "Records read from the events topic, by outcome (accepted, duplicate, rejected).",
        [
            ({"topic": topic, "outcome": "accepted"}, totals["accepted"]),
            ({"topic": topic, "outcome": "duplicate"}, totals["duplicates"]),
            ({"topic": topic, "outcome": "rejected"}, totals["rejected"]),
        ],
    )
    for name, column, meaning in (
        ("consent_ledger_batches_total", "batches",
         "Worker batches committed that held records of the partition."),
        ("consent_ledger_batch_seconds_total", "batch_seconds",
         "Summed processing time of those batches; divided by batches_total, the mean batch latency."),
    ):  # fmt: skip
        out.family(
            name,
            "counter",
            meaning,
            [
                ({"topic": topic, "partition": str(row["kafka_partition"])}, row[column])
                for row in batch_times
            ],
        )
    out.family(
        "consent_ledger_broker_up",
        "gauge",
        "1 when the broker answered for the lag figures, else 0.",
        [({}, 0 if log_end is None else 1)],
    )
    out.family(
        "consent_ledger_consumer_lag",
        "gauge",
        "Records on the events topic the worker has not processed yet, by partition.",
        (
            ({"topic": topic, "partition": str(partition)}, lag)
            for partition, lag in consumer_lag(log_end or {}, next_offsets).items()
        ),
    )
    out.family(
        "consent_ledger_http_requests_total",
        "counter",
        "HTTP requests answered by this API process, by method, route and status.",
        context.requests.samples(),
    )
    return Response(out.text(), media_type=CONTENT_TYPE)


# -- helpers -------------------------------------------------------------------


def _cursor_key(cursor: str, listing: str, size: int) -> tuple[int, ...]:
    try:
        return decode_cursor(cursor, listing, size)
    except InvalidCursor as exc:
        raise invalid_parameter("cursor", str(exc)) from None


def _page(rows: list[Row], limit: int, cursor_of: Any) -> tuple[list[Row], str | None]:
    """The first ``limit`` rows and the cursor after them, or None when no row follows."""
    if len(rows) > limit:
        return rows[:limit], cursor_of(rows[limit - 1])
    return rows, None


def _instant(moment: datetime) -> str:
    return format_micros(to_micros(moment))
