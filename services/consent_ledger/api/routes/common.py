"""What every router of the API shares: the context the app factory wires, the
paging parameters and helpers, the error responses most endpoints declare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends, Query, Request
from starlette.convertors import Convertor, register_url_convertor

from consent_ledger.api import models
from consent_ledger.api.broker import LogEndOffsets, Publisher
from consent_ledger.api.errors import ApiError, invalid_parameter
from consent_ledger.api.metrics import RequestCounts
from consent_ledger.api.models import ErrorResponse
from consent_ledger.api.pagination import MAX_LIMIT, InvalidCursor, decode_cursor
from consent_ledger.core.intake import MAX_ATTRIBUTE_CHARS
from consent_ledger.core.policy import PolicyError, PolicyVersions
from consent_ledger.core.timestamps import (
    InvalidTimestamp,
    format_micros,
    parse_instant,
    to_micros,
)
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.store.api_reads import LedgerReader, LedgerView, Row
from consent_ledger.store.policy_versions import versions_with


class IdConvertor(Convertor[str]):
    """``{name:id}``: a subject or event id in a path, slashes and line breaks
    included (Starlette's ``path`` stops at a line break, and any character
    but U+0000 may be in an id)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("id", IdConvertor())


@dataclass(slots=True)
class ApiContext:
    """What the handlers share: configuration and the adapters the factory wired."""

    settings: Settings
    policy: PolicyVersions
    keyring: KeyRing
    publisher: Publisher
    log_end: LogEndOffsets  # the events topic's extent, for the lag
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

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A bad parameter, named in `error.parameter`"},
    503: {"model": ErrorResponse, "description": "The database cannot be reached"},
}
SUBJECT_ERRORS: dict[int | str, dict[str, Any]] = ERRORS | {
    410: {"model": models.SubjectErased, "description": "The subject was erased"}
}


def subject_parameter(subject: str, parameter: str = "subject") -> str:
    """``subject`` as a path or query parameter, held to what an event's subject may
    be (CONTRACT §1): not empty nor only white space, at most 256 characters.

    Empty or NUL is a malformed request (400); one over the limit is well formed
    but names what no event can name (422, as an event with such a subject is
    refused), never a "retry later"."""
    if not subject.strip():
        raise invalid_parameter(parameter, "is empty; name a subject")
    if len(subject) > MAX_ATTRIBUTE_CHARS:
        raise invalid_parameter(
            parameter,
            f"is {len(subject):,} characters long; a subject id has at most {MAX_ATTRIBUTE_CHARS}",
            status=422,
        )
    if "\x00" in subject:
        raise invalid_parameter(parameter, "holds U+0000 (NUL), which no subject id may hold")
    return subject


def instant_parameter(parameter: str, text: str | None) -> int | None:
    """An optional instant query parameter (CONTRACT timestamps) in microseconds;
    a 400 naming ``parameter`` when it is not one."""
    if text is None:
        return None
    try:
        return parse_instant(text)
    except InvalidTimestamp as exc:
        raise invalid_parameter(parameter, str(exc)) from None


async def versions_for_titles(view: LedgerView, configured: PolicyVersions) -> PolicyVersions:
    """Every policy version, configured and published, for clauses' titles."""
    try:
        return versions_with(configured, await view.policy_versions())
    except PolicyError:  # a clash publishing refuses; titles then come from the configured
        return configured


def cursor_key(cursor: str, listing: str, size: int) -> tuple[int, ...]:
    try:
        return decode_cursor(cursor, listing, size)
    except InvalidCursor as exc:
        raise invalid_parameter("cursor", str(exc)) from None


def page_of(rows: list[Row], limit: int, cursor_of: Any) -> tuple[list[Row], str | None]:
    """The first ``limit`` rows and the cursor after them, or None when no row follows."""
    if len(rows) > limit:
        return rows[:limit], cursor_of(rows[limit - 1])
    return rows, None


def format_instant(moment: datetime) -> str:
    return format_micros(to_micros(moment))
