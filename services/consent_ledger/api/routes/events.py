"""``POST /v1/events``: check a body's events as intake does, publish them all or none."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import Field, TypeAdapter

from consent_ledger.api import models
from consent_ledger.api.auth import granted, requires
from consent_ledger.api.broker import BrokerUnavailable
from consent_ledger.api.errors import ApiError, clip
from consent_ledger.api.models import MAX_LISTED_REJECTIONS, ErrorResponse
from consent_ledger.api.routes.common import Context
from consent_ledger.core.events import Event
from consent_ledger.core.intake import check_request_body, compact_json
from consent_ledger.core.roles import Permission as P
from consent_ledger.core.roles import refused_publication

log = structlog.get_logger(__name__)
router = APIRouter()

# An empty array is a 400 (empty-batch): the schema says so with minItems.
_EVENT_OR_BATCH: TypeAdapter[Any] = TypeAdapter(Event | Annotated[list[Event], Field(min_length=1)])


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
    dependencies=[requires(P.PUBLISH_EVENTS)],
    status_code=202,
    summary="Publish events to the ledger",
    description=(
        "One CloudEvent, or a JSON array of them. Every event is checked as intake "
        "does (docs/CONTRACT.md §2, all but `id-conflict`, which the worker decides). All "
        "valid: all are published to the events topic, and the answer comes after "
        "the broker acknowledged them. Any invalid: nothing is published (422). "
        "Publishing is safe to retry: an event delivered twice is counted as a duplicate."
    ),
    responses={
        400: {"model": ErrorResponse, "description": "The body is empty, or an empty array"},
        413: {"model": ErrorResponse, "description": "The body is larger than the limit"},
        422: {
            "model": models.RejectedEvents,
            "description": (
                f"Invalid events; none published. `rejected` lists the first "
                f"{MAX_LISTED_REJECTIONS}, `rejected_total` counts them all"
            ),
        },
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
    # In a worker thread: a megabyte of tiny elements takes the decoder a second
    # or more, which must not stall every other request (/healthz included).
    checked = await run_in_threadpool(check_request_body, raw, MAX_LISTED_REJECTIONS)
    if not checked.events:
        raise ApiError(400, "empty-batch", "the array holds no events")
    refused = refused_publication(
        granted(request).caller,
        ((event.id, event.type, str(event.body.get("source"))) for event in checked.valid),
    )
    if refused is not None:
        erasure = "ErasureRequested" in refused.reason
        raise ApiError(
            403,
            "erasure-not-allowed" if erasure else "source-not-allowed",
            refused.reason + "; nothing was published",
            details={"event_id": refused.event_id},
        )
    if checked.rejected_total:
        rejected = [
            models.RejectedEvent(
                index=index,
                reason=rejection.reason.value,  # type: ignore[arg-type]  # never id-conflict here
                detail=clip(rejection.detail),
                event_id=rejection.event_id,
            )
            for index, rejection in checked.rejected
        ]
        listed = (
            f"; the first {len(rejected)} are listed"
            if len(rejected) < checked.rejected_total
            else ""
        )
        raise ApiError(
            422,
            "invalid-events",
            f"{checked.rejected_total} of {checked.events} events are invalid; none was "
            f"published{listed}",
            body={
                "rejected": [item.model_dump() for item in rejected],
                "rejected_total": checked.rejected_total,
            },
        )
    valid = checked.valid
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
