"""The listings: violations and rejected records, paged by cursor."""

from __future__ import annotations

import base64
from typing import Annotated, Final, Literal

from fastapi import APIRouter, Query, Request

from consent_ledger.api import models
from consent_ledger.api.auth import record_access, requires
from consent_ledger.api.pagination import DEFAULT_LIMIT, encode_cursor
from consent_ledger.api.routes.common import (
    ERRORS,
    Context,
    Cursor,
    Limit,
    cursor_key,
    format_instant,
    page_of,
    subject_parameter,
    versions_for_titles,
)
from consent_ledger.core.policy import PolicyVersions
from consent_ledger.core.roles import Permission as P
from consent_ledger.core.timestamps import format_micros
from consent_ledger.core.verdicts import Rule
from consent_ledger.store.api_reads import LedgerView, Row

router = APIRouter()


@router.get(
    "/v1/violations",
    dependencies=[requires(P.READ_VIOLATIONS)],
    summary="Violations, open and retracted, in the order they were found",
    responses=ERRORS,
)
async def list_violations(
    request: Request,
    context: Context,
    status: Annotated[models.ViolationStatus | None, Query()] = None,
    subject: Annotated[str | None, Query(min_length=1)] = None,
    rule: Annotated[Rule | None, Query()] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> models.ViolationPage:
    if subject is not None:
        subject_parameter(subject)
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
        versions = await _versions_judging(view, context.policy, page)
    await record_access(request, (row["subject"] for row in page))
    return models.ViolationPage(
        items=[_violation(row, versions) for row in page], next_cursor=next_cursor
    )


async def _versions_judging(
    view: LedgerView, configured: PolicyVersions, page: list[Row]
) -> PolicyVersions:
    """The policy versions that judged the page's violations, for their clauses'
    titles: the configured ones, and the published ones only when a violation
    names a version not configured (reading and parsing them costs a query)."""
    names = {policy.version for policy in configured.versions}
    if all(row["policy_version"] is None or row["policy_version"] in names for row in page):
        return configured
    return await versions_for_titles(view, configured)


def _violation(row: Row, versions: PolicyVersions) -> models.ViolationItem:
    return models.ViolationItem(
        event_id=row["event_id"],
        rule=row["rule"],
        subject=row["subject"],
        severity=row["severity"],
        status=row["status"],
        clause=row["clause"],
        clause_title=versions.clause_title(row["clause"], row["policy_version"]),
        explanation=row["explanation"],
        detected_at=format_instant(row["detected_at"]),
        occurred_at=format_micros(row["occurred_us"]),
        updated_at=format_instant(row["updated_at"]),
        policy_version=row["policy_version"],
    )


#: About the most bytes of JSON a page of ``/v1/rejected`` holds: a rejected
#: record may be a megabyte, and a thousand of them must not make a gigabyte.
REJECTED_PAGE_BYTES: Final = 1_000_000
#: The most characters of a rejected record's detail, event id or subject shown.
REJECTED_TEXT_CHARS: Final = 1_024


@router.get(
    "/v1/rejected",
    dependencies=[requires(P.READ_REJECTED)],
    summary="Records the worker rejected, with their reasons and raw bytes",
    description=(
        f"Paged by rows (`limit`) and by size: a page holds about {REJECTED_PAGE_BYTES:,} "
        "bytes at most. A record that does not fit after others starts the next page "
        "(`next_cursor`); a record larger than a page on its own is shown cut, with "
        "`raw_truncated` true and its full size in `raw_bytes`. Details, event ids and "
        f"subjects longer than {REJECTED_TEXT_CHARS:,} characters are cut and end with "
        "'…'."
    ),
    responses=ERRORS,
)
async def list_rejected(
    request: Request, context: Context, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> models.RejectedPage:
    (after_id,) = cursor_key(cursor, "rejected", 1) if cursor else (0,)
    async with context.ledger().snapshot() as view:
        rows = await view.rejected(
            after_id=after_id,
            limit=limit + 1,
            raw_budget=REJECTED_PAGE_BYTES,
            text_chars=REJECTED_TEXT_CHARS,
        )
    items: list[models.RejectedRecord] = []
    used = 0
    for row in rows[:limit]:
        item = _rejected(row, len(row["raw"]))
        size = _json_size(item)
        if items and used + size > REJECTED_PAGE_BYTES:
            break  # it starts the next page, where it has the whole budget
        if size > REJECTED_PAGE_BYTES:
            item = _rejected_within(row, REJECTED_PAGE_BYTES)
            size = _json_size(item)
        items.append(item)
        used += size
    # page_rows: how many of the limit + 1 rows asked for exist, fitting or not.
    more = bool(rows) and len(items) < rows[0]["page_rows"]
    next_cursor = encode_cursor("rejected", items[-1].id) if more else None
    # Raw bytes may hold personal data of a subject no key names: logged whenever any leave.
    await record_access(
        request, (item.subject for item in items if item.subject), always=bool(items)
    )
    return models.RejectedPage(items=items, next_cursor=next_cursor)


def _json_size(item: models.RejectedRecord) -> int:
    return len(item.model_dump_json())


def _rejected_within(row: Row, budget: int) -> models.RejectedRecord:
    """The record with its raw bytes cut to the longest prefix whose item fits in
    ``budget`` bytes of JSON (an escaped control character takes six)."""
    low, high = 0, len(row["raw"])
    while low < high:
        middle = (low + high + 1) // 2
        if _json_size(_rejected(row, middle)) <= budget:
            low = middle
        else:
            high = middle - 1
    return _rejected(row, low)


def _rejected(row: Row, shown: int) -> models.RejectedRecord:
    """The record with the first ``shown`` bytes of its raw record (the row holds
    a prefix of it when the record is larger than a page)."""
    raw: bytes = row["raw"][:shown]
    truncated = len(raw) < row["raw_bytes"]
    text, encoding = _raw_text(raw, truncated)
    return models.RejectedRecord(
        id=row["id"],
        reason=row["reason"],
        detail=_cut(row["detail"]),
        event_id=_cut(row["event_id"]) if row["event_id"] is not None else None,
        subject=_cut(row["subject"]) if row["subject"] is not None else None,
        partition=row["kafka_partition"],
        offset=row["kafka_offset"],
        recorded_at=format_instant(row["recorded_at"]),
        raw=text,
        raw_encoding=encoding,
        raw_bytes=row["raw_bytes"],
        raw_truncated=truncated,
    )


def _raw_text(raw: bytes, truncated: bool) -> tuple[str, Literal["utf-8", "base64"]]:
    """UTF-8 text when the bytes are, else base64. A cut may fall inside a
    character: up to three bytes of its start are left out then."""
    for drop in range(4 if truncated else 1):
        try:
            return raw[: len(raw) - drop].decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            continue
    return base64.b64encode(raw).decode("ascii"), "base64"


def _cut(text: str) -> str:
    # The row holds one character more than is shown when the text is longer.
    if len(text) <= REJECTED_TEXT_CHARS:
        return text
    return text[:REJECTED_TEXT_CHARS] + "…"
