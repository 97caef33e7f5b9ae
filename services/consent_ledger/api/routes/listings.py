"""The listings: violations and rejected records, paged by cursor."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Query

from consent_ledger.api import models
from consent_ledger.api.pagination import DEFAULT_LIMIT, encode_cursor
from consent_ledger.api.routes.common import (
    ERRORS,
    Context,
    Cursor,
    Limit,
    cursor_key,
    format_instant,
    page_of,
)
from consent_ledger.core.timestamps import format_micros
from consent_ledger.core.verdicts import Rule
from consent_ledger.store.api_reads import Row

router = APIRouter()


@router.get(
    "/v1/violations",
    summary="Violations, open and retracted, in the order they were found",
    responses=ERRORS,
)
async def list_violations(
    context: Context,
    status: Annotated[models.ViolationStatus | None, Query()] = None,
    subject: Annotated[str | None, Query(min_length=1)] = None,
    rule: Annotated[Rule | None, Query()] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> models.ViolationPage:
    (after_id,) = cursor_key(cursor, "violations", 1) if cursor else (0,)
    async with context.ledger().snapshot() as view:
        rows = await view.violations(
            after_id=after_id,
            limit=limit + 1,
            status=status.value if status else None,
            subject=subject,
            rule=rule.value if rule else None,
        )
    page, next_cursor = page_of(rows, limit, lambda row: encode_cursor("violations", row["id"]))
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
        detected_at=format_instant(row["detected_at"]),
        occurred_at=format_micros(row["occurred_us"]),
        updated_at=format_instant(row["updated_at"]),
        policy_version=row["policy_version"],
    )


@router.get(
    "/v1/rejected",
    summary="Records the worker rejected, with their reasons and raw bytes",
    responses=ERRORS,
)
async def list_rejected(
    context: Context, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> models.RejectedPage:
    (after_id,) = cursor_key(cursor, "rejected", 1) if cursor else (0,)
    async with context.ledger().snapshot() as view:
        rows = await view.rejected(after_id=after_id, limit=limit + 1)
    page, next_cursor = page_of(rows, limit, lambda row: encode_cursor("rejected", row["id"]))
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
        recorded_at=format_instant(row["recorded_at"]),
        raw=text,
        raw_encoding=encoding,  # type: ignore[arg-type]  # one of the two literals
    )
