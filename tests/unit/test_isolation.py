"""What the worker waits out (an outage) and what it isolates (a record's own
failure), and how an isolated record is filed: CONTRACT §2."""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg.exceptions import _base as asyncpg_base

from consent_ledger.core.batch import Record, filed_subject, key_subject
from consent_ledger.worker.isolation import describe, is_transient

pytestmark = [pytest.mark.unit]


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError("reset by peer"),
        ConnectionRefusedError("refused"),
        TimeoutError(),
        TimeoutError(),
        OSError("network unreachable"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.DiskFullError("could not extend file"),
        asyncpg.TooManyConnectionsError("too many clients"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    ],
)
def test_an_outage_is_waited_out(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
        asyncpg.ProgramLimitExceededError("index row size 8024 exceeds btree version 4 maximum"),
        asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
        asyncpg.RaiseError("refused by a trigger"),
        asyncpg.NumericValueOutOfRangeError("bigint out of range"),
        asyncpg_base.DataError("invalid input for query argument $2: surrogates not allowed"),
        RecursionError("maximum recursion depth exceeded"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        ValueError("anything else"),
        KeyError("data"),
    ],
)
def test_a_failure_of_the_data_is_isolated(error: BaseException) -> None:
    assert not is_transient(error)


def test_the_detail_is_storable_and_bounded() -> None:
    detail = describe(ValueError("nul\x00 and a lone \ud800 surrogate " + "x" * 5_000))
    assert detail.startswith("ValueError: nul\\x00 and a lone \\ud800 surrogate")
    assert len(detail) <= 1_024 + 16  # escapes may lengthen the cut text a little
    detail.encode("utf-8")  # no unpaired surrogate left


@pytest.mark.parametrize(
    ("text", "filed"),
    [
        ("anna", "anna"),
        ("x" * 256, "x" * 256),
        ("x" * 257, None),
        ("", None),
        (None, None),
        ("nul\x00", None),
        ("lone\ud800", None),
    ],
)
def test_a_rejected_record_is_filed_under_a_subject_only_if_one_could_be_erased(
    text: str | None, filed: str | None
) -> None:
    assert filed_subject(text) == filed


def test_a_kafka_key_names_a_subject_when_it_is_text() -> None:
    assert key_subject(b"anna@example.org") == "anna@example.org"
    assert key_subject(b"\xff\xfe") is None
    assert key_subject(None) is None
    assert Record(0, 0, b"", (), b"k").key == b"k"
