"""The ledger's errors become HTTP answers in one place (api/errors.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from consent_ledger.api.errors import install_error_handlers
from consent_ledger.errors import (
    LedgerError,
    LedgerInconsistent,
    NotCovered,
    UnknownCheckpoint,
    UnknownEvent,
)

pytestmark = pytest.mark.unit


async def answer_to(error: Exception) -> tuple[int, dict[str, Any]]:
    app = FastAPI()
    install_error_handlers(app, checkpoint_interval_s=7)

    @app.get("/raise")
    async def raise_it() -> None:
        raise error

    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.get("/raise")
    return response.status_code, response.json()["error"]


@pytest.mark.parametrize(
    ("error", "status", "code", "told"),
    [
        (UnknownEvent("e-1"), 404, "unknown-event", "'e-1'"),
        (UnknownCheckpoint(None), 404, "no-checkpoint", "7 s"),
        (UnknownCheckpoint(4), 404, "unknown-checkpoint", "checkpoint 4"),
        (NotCovered("e-1", None, named=False), 404, "not-yet-checkpointed", "none has been"),
        (NotCovered("e-1", 3, named=False), 404, "not-yet-checkpointed", "checkpoint 3"),
        (NotCovered("e-1", 3, named=True), 404, "not-in-checkpoint", "ask a later checkpoint"),
        (LedgerInconsistent("leaf 3 differs"), 500, "ledger-inconsistent", "consent-ledger verify"),
        (LedgerError("new kind"), 500, "internal-error", "logged"),
    ],
)
async def test_each_ledger_error_has_its_status_and_code(
    error: Exception, status: int, code: str, told: str
) -> None:
    answered, body = await answer_to(error)
    assert (answered, body["code"]) == (status, code)
    assert told in body["message"]


async def test_a_value_error_is_an_internal_error_not_an_inconsistent_ledger() -> None:
    answered, body = await answer_to(ValueError("a bug"))
    assert (answered, body["code"]) == (500, "internal-error")
    assert "a bug" not in body["message"]


def test_the_covering_checkpoint_is_named_in_the_answer() -> None:
    assert NotCovered("e-1", 3, named=True).checkpoint_id == 3
    assert isinstance(UnknownEvent("e-1"), LookupError)  # callers that caught LookupError still do
