"""Errors as JSON: every 4xx and 5xx answer is ``{"error": {"code", "message", ...}}``.

Handlers are installed for the API's own :class:`ApiError`, for FastAPI's
parameter validation (a bad query parameter is a 400 naming the parameter),
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

log = structlog.get_logger(__name__)


class ApiError(Exception):
    """An answer other than success: a status, a stable code and a sentence.

    ``details`` go inside ``error`` (e.g. ``parameter``); ``body`` adds fields
    beside it (e.g. the ``rejected`` list of a 422).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.body = dict(body or {})


def invalid_parameter(parameter: str, problem: str) -> ApiError:
    """A 400 for one bad query or path parameter, naming it and saying why."""
    return ApiError(
        400, "invalid-parameter", f"{parameter}: {problem}", details={"parameter": parameter}
    )


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


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
    return JSONResponse(body, status_code=exc.status)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part not in ("query", "path")]
        problems.append({"parameter": ".".join(location), "problem": str(error.get("msg", ""))})
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


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
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
