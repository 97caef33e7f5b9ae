"""Logs outlive erasure: error messages about a record are logged with their
quoted values redacted (log.redact_values)."""

from __future__ import annotations

import asyncpg
import pytest
import structlog

from consent_ledger.log import redact_exception, redact_values

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        # asyncpg quotes the query argument it could not encode.
        (
            "DataError: invalid input for query argument $3: ['anna.s@example.com\\ud800'] "
            "('utf-8' codec can't encode character '\\ud800' in position 18: surrogates not "
            "allowed)",
            "surrogates not allowed",
        ),
        ("KeyError: b'anna.s@example.com'", "KeyError"),
        ('duplicate key value for "anna.s@example.com"', "duplicate key value"),
        ("ValueError('anna.s@example.com')", "ValueError"),
    ],
)
def test_quoted_values_are_redacted(message: str, kept: str) -> None:
    redacted = redact_values(message)
    assert "anna" not in redacted
    assert kept in redacted and "characters redacted" in redacted


def test_an_apostrophe_is_not_a_quote() -> None:
    assert redact_values("can't encode 'x'") == "can't encode <3 characters redacted>"


def test_a_traceback_keeps_its_source_lines_and_redacts_its_message() -> None:
    try:
        raise asyncpg.DataError("invalid input for query argument $1: ['anna.s@example.com']")
    except asyncpg.DataError:
        event = structlog.processors.format_exc_info(None, "error", {"exc_info": True})
    redacted = redact_exception(None, "error", dict(event))["exception"]
    assert "Traceback" in redacted and 'raise asyncpg.DataError("invalid input' in redacted
    assert "anna" not in redacted.splitlines()[-1]
    assert "invalid input for query argument $1" in redacted.splitlines()[-1]
