"""Errors as JSON: every 4xx and 5xx answer is ``{"error": {"code", "message", ...}}``.

Handlers are installed for the API's own :class:`ApiError`, for the ledger's
errors (:mod:`consent_ledger.errors`: the one place they become statuses),
for FastAPI's parameter validation (a bad query parameter is a 400 naming the parameter),
for HTTP errors Starlette raises itself (unknown route 404, wrong method 405),
for database outages (503) and for anything unexpected (500, logged).
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from consent_ledger.errors import (
    LedgerError,
    LedgerInconsistent,
    NotCovered,
    UnknownCheckpoint,
    UnknownEvent,
)

log = structlog.get_logger(__name__)

#: The most characters of a sentence an error answer carries: messages and
#: details may quote what the caller sent, which is bounded only by the request.
MAX_MESSAGE_CHARS = 512


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text``, cut to ``limit`` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


class ApiError(Exception):
    """An answer other than success: a status, a stable code and a sentence.

    ``details`` go inside ``error`` (e.g. ``parameter``); ``body`` adds fields
    beside it (e.g. the ``rejected`` list of a 422); ``headers`` go on the answer
    (``WWW-Authenticate``, ``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.body = dict(body or {})
        self.headers = dict(headers or {})


def invalid_parameter(parameter: str, problem: str, status: int = 400) -> ApiError:
    """A 400 (or ``status``) for one bad query or path parameter, naming it and saying why."""
    return ApiError(
        status, "invalid-parameter", f"{parameter}: {problem}", details={"parameter": parameter}
    )


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": clip(message), **extra}}


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def _status_code_name(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-")
    except ValueError:
        return "error"


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    body = error_body(exc.code, exc.message, **exc.details)
    body.update(exc.body)
    return JSONResponse(body, status_code=exc.status, headers=exc.headers or None)


def _ledger_error_handler(checkpoint_interval_s: float) -> Any:
    cadence = (
        "checkpoints are signed every LEDGER_CHECKPOINT_INTERVAL_S seconds "
        f"({checkpoint_interval_s:g} s in this API's configuration) once new entries arrive"
    )

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return _ledger_error(exc, cadence)

    return handle


def _ledger_error(exc: Exception, cadence: str) -> JSONResponse:
    """The status, code and sentence of each of the ledger's errors."""
    match exc:
        case UnknownEvent(event_id=event_id):
            return error_response(
                404, "unknown-event",
                f"no ledger entry with event id {event_id!r}: the ledger has not accepted "
                "such an event",
            )  # fmt: skip
        case UnknownCheckpoint(checkpoint_id=None):
            return error_response(
                404, "no-checkpoint", f"no checkpoint has been signed yet; {cadence}"
            )
        case UnknownCheckpoint(checkpoint_id=number):
            return error_response(404, "unknown-checkpoint", f"no checkpoint {number}")
        case NotCovered(event_id=event_id, checkpoint_id=None):
            return error_response(
                404, "not-yet-checkpointed",
                f"event {event_id!r} is not covered by a checkpoint yet: none has been "
                f"signed; {cadence}, retry then",
            )  # fmt: skip
        case NotCovered(event_id=event_id, checkpoint_id=number, named=True):
            return error_response(
                404, "not-in-checkpoint",
                f"event {event_id!r} is not covered by checkpoint {number}: it was "
                "recorded after that checkpoint was signed; ask a later checkpoint, "
                "or omit `checkpoint` for the latest",
                checkpoint_id=number,
            )  # fmt: skip
        case NotCovered(event_id=event_id, checkpoint_id=number):
            return error_response(
                404, "not-yet-checkpointed",
                f"event {event_id!r} is not covered by a checkpoint yet: it was recorded "
                f"after the latest, checkpoint {number}, was signed; {cadence}, retry then",
                checkpoint_id=number,
            )  # fmt: skip
        case LedgerInconsistent():
            log.error("ledger inconsistent", problem=str(exc))
            return error_response(
                500, "ledger-inconsistent",
                f"{exc}; `consent-ledger verify` checks the stored ledger against its "
                "checkpoints",
            )  # fmt: skip
        case _:  # a LedgerError the API has no answer for is the API's bug
            log.error("unmapped ledger error", error=repr(exc))
            return error_response(
                500, "internal-error", "the server failed to answer; this was logged"
            )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part not in ("query", "path")]
        problem = clip(str(error.get("msg", "")))
        problems.append({"parameter": clip(".".join(location)), "problem": problem})
    first = problems[0] if problems else {"parameter": "", "problem": "invalid request"}
    message = "; ".join(f"{p['parameter']}: {p['problem']}" for p in problems) or "invalid request"
    return error_response(
        400, "invalid-parameter", message, parameter=first["parameter"], problems=problems
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404 and exc.detail == HTTPStatus.NOT_FOUND.phrase:
        message = f"no such resource: {request.method} {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(
        exc.status_code, _status_code_name(exc.status_code), message, headers=exc.headers
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable", path=request.url.path, error=repr(exc))
    return error_response(
        503, "database-unavailable", "the database cannot be reached; retry later"
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", path=request.url.path, method=request.method)
    return error_response(500, "internal-error", "the server failed to answer; this was logged")


def install_error_handlers(app: FastAPI, *, checkpoint_interval_s: float) -> None:
    """``checkpoint_interval_s`` is told to callers asking for what no checkpoint
    covers yet."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(LedgerError, _ledger_error_handler(checkpoint_interval_s))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Connection-class failures only: a broken query is a bug (500), not an outage.
    for outage in (
        OSError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError,
        asyncpg.TooManyConnectionsError,
    ):
        app.add_exception_handler(outage, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)


def refuse_nul(request: Request) -> None:
    """Refuse U+0000 in any path or query parameter with a 400 naming it: no id,
    subject or cursor the ledger stores can hold it, and PostgreSQL refuses it in text.
    Called once the caller is authenticated (api/auth.py), so that nothing under
    /v1 answers a caller without a token but 401."""
    for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
        if isinstance(value, str) and "\x00" in value:
            raise invalid_parameter(name, "holds U+0000 (NUL), which no value here may hold")
