"""Who may call, and who read what: ``/v1/tokens`` (admin, what ``consent-ledger
token`` does) and ``/v1/access-log`` (privacy officer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from consent_ledger.api.auth import authenticator, requires
from consent_ledger.api.errors import ApiError, invalid_parameter
from consent_ledger.api.models import ErrorResponse
from consent_ledger.api.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
)
from consent_ledger.api.routes.common import instant_parameter
from consent_ledger.core.roles import Permission, Role
from consent_ledger.core.timestamps import format_micros, to_micros
from consent_ledger.store.access_log import AccessLog
from consent_ledger.store.tokens import TokenError, TokenRecord, TokenStore

router = APIRouter()

_INSTANT = "RFC 3339 instant in UTC, e.g. 2026-03-01T08:00:00Z"
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A bad parameter, named in `error.parameter`"},
    503: {"model": ErrorResponse, "description": "The database cannot be reached"},
}


class TokenItem(BaseModel):
    """A token as it is kept: never the token itself."""

    name: str
    roles: list[Role]
    sources: list[str] = Field(description="The `source` values a publisher may publish")
    created_at: str = Field(description=_INSTANT)
    expires_at: str | None = Field(description=f"{_INSTANT}; null: never")
    last_used_at: str | None = Field(description=f"{_INSTANT}, to the minute; null: never used")
    revoked_at: str | None = Field(description=f"{_INSTANT}; null: live")


class TokenList(BaseModel):
    items: list[TokenItem]


class TokenRequest(BaseModel):
    """A token to issue, as `consent-ledger token create` takes it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["crm-publisher"])
    roles: list[Role] = Field(min_length=1, examples=[["publisher"]])
    sources: list[str] = Field(default=[], examples=[["urn:system:crm"]])
    expires_in_days: int | None = Field(default=None, ge=1, le=36_500)


class IssuedToken(TokenItem):
    token: str = Field(description="The bearer token: shown once, only its hash is kept")


class AccessItem(BaseModel):
    id: int
    accessed_at: str = Field(description=_INSTANT)
    token_name: str
    role: Role = Field(description="The caller's role that allowed the access")
    endpoint: str = Field(examples=["GET /v1/subjects/{subject}/events"])
    subjects: list[str]
    purpose: str | None = Field(description="The caller's X-Purpose header, if sent")


class AccessPage(BaseModel):
    items: list[AccessItem]
    next_cursor: str | None


def _tokens(request: Request) -> TokenStore:
    store = authenticator(request).tokens
    if store is None:
        raise ApiError(503, "not-started", "the API has no database connection yet")
    return store


def _access_log(request: Request) -> AccessLog:
    log = authenticator(request).access_log
    if log is None:
        raise ApiError(503, "not-started", "the API has no database connection yet")
    return log


def _instant(moment: datetime | None) -> str | None:
    return format_micros(to_micros(moment)) if moment is not None else None


def _token_item(record: TokenRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "roles": list(record.roles),
        "sources": list(record.sources),
        "created_at": _instant(record.created_at),
        "expires_at": _instant(record.expires_at),
        "last_used_at": _instant(record.last_used_at),
        "revoked_at": _instant(record.revoked_at),
    }


@router.get(
    "/v1/tokens",
    summary="The API's bearer tokens: names, roles, sources, expiry, last use",
    dependencies=[requires(Permission.MANAGE_TOKENS)],
    responses=_ERRORS,
)
async def list_tokens(
    request: Request,
    revoked: Annotated[bool, Query(description="Also list revoked tokens")] = False,
) -> TokenList:
    records = await _tokens(request).tokens(include_revoked=revoked)
    return TokenList(items=[TokenItem.model_validate(_token_item(r)) for r in records])


@router.post(
    "/v1/tokens",
    status_code=201,
    summary="Issue a token; the answer is the only time it is shown",
    dependencies=[requires(Permission.MANAGE_TOKENS)],
    responses=_ERRORS | {409: {"model": ErrorResponse, "description": "The name is taken"}},
)
async def issue_token(request: Request, body: TokenRequest) -> IssuedToken:
    expires_at = (
        datetime.now(UTC) + timedelta(days=body.expires_in_days)
        if body.expires_in_days is not None
        else None
    )
    try:
        token, record = await _tokens(request).issue(
            body.name,
            [role.value for role in body.roles],
            sources=body.sources,
            expires_at=expires_at,
        )
    except TokenError as exc:
        status, code = (
            (409, "token-exists") if "exists" in str(exc) else (400, "invalid-token-request")
        )
        raise ApiError(status, code, str(exc)) from None
    return IssuedToken.model_validate({**_token_item(record), "token": token})


@router.delete(
    "/v1/tokens/{name}",
    status_code=204,
    summary="Revoke a token: it stops working at once",
    dependencies=[requires(Permission.MANAGE_TOKENS)],
    responses={404: {"model": ErrorResponse, "description": "No live token has that name"}},
)
async def revoke_token(request: Request, name: str) -> Response:
    if not await _tokens(request).revoke(name):
        raise ApiError(404, "unknown-token", f"no live token named {name!r}")
    return Response(status_code=204)


def _time_filter(parameter: str, text: str | None) -> datetime | None:
    micros = instant_parameter(parameter, text)
    return None if micros is None else datetime.fromtimestamp(micros / 1_000_000, UTC)


@router.get(
    "/v1/access-log",
    summary="Who read which subjects' personal data, when, and for what purpose",
    description=(
        "One item per answer of this API that carried named subjects' personal data, "
        "oldest first. `from` is inclusive, `to` exclusive. Reading the access log is not "
        "itself logged: it holds pseudonymous ids and who read them, no personal data."
    ),
    dependencies=[requires(Permission.READ_ACCESS_LOG)],
    responses=_ERRORS,
)
async def access_log(
    request: Request,
    subject: Annotated[str | None, Query(min_length=1)] = None,
    token: Annotated[str | None, Query(min_length=1, description="A token's name")] = None,
    since: Annotated[str | None, Query(alias="from", description=_INSTANT)] = None,
    until: Annotated[str | None, Query(alias="to", description=_INSTANT)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> AccessPage:
    after_id = 0
    if cursor is not None:
        try:
            (after_id,) = decode_cursor(cursor, "access-log", 1)
        except InvalidCursor as exc:
            raise invalid_parameter("cursor", str(exc)) from None
    rows = await _access_log(request).page(
        after_id=after_id,
        limit=limit + 1,
        subject=subject,
        token_name=token,
        since=_time_filter("from", since),
        until=_time_filter("to", until),
    )
    page = rows[:limit]
    next_cursor = encode_cursor("access-log", page[-1].id) if len(rows) > limit else None
    items = [
        AccessItem(
            id=row.id,
            accessed_at=format_micros(to_micros(row.accessed_at)),
            token_name=row.token_name,
            role=Role(row.role),
            endpoint=row.endpoint,
            subjects=list(row.subjects),
            purpose=row.purpose,
        )
        for row in page
    ]
    return AccessPage(items=items, next_cursor=next_cursor)
