"""RFC 3339 ``date-time`` with a zone offset, exactly as CONTRACT §1 defines it."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_ledger.core.timestamps import (
    InvalidTimestamp,
    format_micros,
    from_micros,
    parse_datetime,
    parse_instant,
    to_micros,
)

pytestmark = pytest.mark.unit


def utc_micros(*fields: int) -> int:
    """Microseconds since the epoch of a UTC wall-clock time, computed without the module."""
    return (datetime(*fields, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1
    )


EIGHT_UTC = utc_micros(2026, 3, 1, 8, 0, 0)

ACCEPTED = [
    ("2026-03-01T08:00:00Z", EIGHT_UTC),
    ("2026-03-01T08:00:00z", EIGHT_UTC),
    ("2026-03-01t08:00:00Z", EIGHT_UTC),
    ("2026-03-01t08:00:00z", EIGHT_UTC),
    ("2026-03-01T08:00:00+00:00", EIGHT_UTC),
    ("2026-03-01T08:00:00-00:00", EIGHT_UTC),
    ("2026-03-01T10:00:00+02:00", EIGHT_UTC),
    ("2026-03-01T03:00:00-05:00", EIGHT_UTC),
    ("2026-03-01T13:45:00+05:45", EIGHT_UTC),
    ("2026-03-02T07:59:00+23:59", EIGHT_UTC),
    ("2026-02-28T08:01:00-23:59", EIGHT_UTC),
    ("2026-03-01T09:00:00.250+01:00", EIGHT_UTC + 250_000),
    ("2026-03-01T08:00:00.1Z", EIGHT_UTC + 100_000),
    ("2026-03-01T08:00:00.12Z", EIGHT_UTC + 120_000),
    ("2026-03-01T08:00:00.123Z", EIGHT_UTC + 123_000),
    ("2026-03-01T08:00:00.1234Z", EIGHT_UTC + 123_400),
    ("2026-03-01T08:00:00.12345Z", EIGHT_UTC + 123_450),
    ("2026-03-01T08:00:00.123456Z", EIGHT_UTC + 123_456),
    ("2026-03-01T08:00:00.1234567Z", EIGHT_UTC + 123_456),
    ("2026-03-01T08:00:00.12345678Z", EIGHT_UTC + 123_456),
    ("2026-03-01T08:00:00.123456789Z", EIGHT_UTC + 123_456),
    ("2026-03-01T08:00:00.000000001Z", EIGHT_UTC),
    ("2026-03-01T08:00:00.0Z", EIGHT_UTC),
    ("2024-02-29T00:00:00Z", utc_micros(2024, 2, 29)),
    ("2000-02-29T23:59:59Z", utc_micros(2000, 2, 29, 23, 59, 59)),
    ("1969-12-31T23:59:59.5Z", -500_000),
    ("1970-01-01T00:00:00Z", 0),
    ("0001-01-01T00:00:00Z", utc_micros(1, 1, 1)),
    ("9999-12-31T23:59:59Z", utc_micros(9999, 12, 31, 23, 59, 59)),
    # A leap second is the instant just after hh:mm:59.
    ("2016-12-31T23:59:60Z", utc_micros(2017, 1, 1)),
]

REFUSED: list[Any] = [
    "2026-03-01T08:00Z",  # no seconds
    "2026-03-01T08Z",
    "2026-03-01T08:00:00",  # no offset
    "2026-03-01T08:00:00.250",
    "2026-03-01",
    "20260301T080000Z",  # basic format
    "2026-03-01T080000Z",
    "20260301T08:00:00Z",
    "2026-03-01T08:00:00+0100",  # offset without colon
    "2026-03-01T08:00:00+01",
    "2026-03-01T08:00:00+1:00",
    "2026-03-01T08:00:00 +01:00",
    "2026-03-01T08:00:00UTC",
    "2026-03-01T08:00:00GMT+1",
    "2026-03-01 08:00:00Z",  # a space, not T
    "2026-03-01_08:00:00Z",
    "2026-03-01T08:00:00.Z",  # empty fraction
    "2026-03-01T08:00:00,5Z",  # comma fraction
    "2026-3-1T08:00:00Z",
    "2026-03-01T8:00:00Z",
    "+2026-03-01T08:00:00Z",
    "12026-03-01T08:00:00Z",
    " 2026-03-01T08:00:00Z",
    "2026-03-01T08:00:00Z ",
    "2026-03-01T08:00:00Z\n",
    "2026-03-01T08:00:00ZZ",
    "2026-W09-7T08:00:00Z",  # ISO week date
    "2026-060T08:00:00Z",  # ordinal date
    "",
    "1772352000",  # epoch numbers
    "1772352000000",
    1772352000,
    1772352000.0,
    None,
    True,
    ["2026-03-01T08:00:00Z"],
    {"time": "2026-03-01T08:00:00Z"},
    b"2026-03-01T08:00:00Z",
    "2026-02-30T08:00:00Z",  # impossible dates and times
    "2026-02-29T08:00:00Z",
    "1900-02-29T08:00:00Z",
    "2026-04-31T08:00:00Z",
    "2026-13-01T08:00:00Z",
    "2026-00-10T08:00:00Z",
    "2026-03-00T08:00:00Z",
    "2026-03-32T08:00:00Z",
    "0000-01-01T00:00:00Z",
    "2026-03-01T24:00:00Z",
    "2026-03-01T08:60:00Z",
    "2026-03-01T08:00:61Z",
    "2026-03-01T08:00:75Z",
    "2026-03-01T08:00:99Z",
    "2026-03-01T08:00:00+24:00",  # impossible offsets
    "2026-03-01T08:00:00-24:00",
    "2026-03-01T08:00:00+01:60",
    "2026-03-01T08:00:00+99:99",
    "\u0662\u0660\u0662\u0666-03-01T08:00:00Z",  # Arabic-Indic digits are not DIGIT
    "2026-03-01T08:00:00.\u0665Z",
    "\uff12\uff10\uff12\uff16-03-01T08:00:00Z",  # full-width digits
    "9999-12-31T23:59:59-01:00",  # no such instant in UTC
    "9999-12-31T23:59:60Z",
    "0001-01-01T00:00:00+01:00",
    # What follows a known minute is checked by hand: each part of it.
    "2026-03-01T08:00:0aZ",
    "2026-03-01T08:00:00.1\u0665Z",
    "2026-03-01T08:00:00.Z1",
    "2026-03-01T08:00:00.+01:00",
    "2026-03-01T08:00:00+01:00Z",
    "2026-03-01T08:00:00Z+01:00",
    "2026-03-01T08:00:00.5.5Z",
    "2026-03-01T08:00:00-1a:00",
    "2026-03-01T08:00:00+01:0a",
    "2026-03-01T08:00:00+01+00",
    "2026-03-01T08:00:00*01:00",
    "2026-03-01T08:00:00.12345+01:00:00",
    "2026-03-01T08:00+01:00",
    "2026-03-01T08:00.5Z",
    "2026-03-01T08:00:00.1234567aZ",  # digits beyond the sixth are dropped, but read
    "2026-03-01T08:00:00.12345a7Z",
    "2026-03-01T08:00:-1Z",
    "2026-03-01T08:00:00+-1:00",
]


def prime(text: Any) -> None:
    """Read a valid time in the minute ``text`` starts with, if there is one, so
    that reading ``text`` takes the hot path for a minute seen before."""
    with contextlib.suppress(InvalidTimestamp, TypeError):
        parse_instant(text[:16] + ":00Z")


@pytest.mark.parametrize("primed", [False, True], ids=["new minute", "known minute"])
@pytest.mark.parametrize(("text", "micros"), ACCEPTED)
def test_accepted_forms(text: str, micros: int, primed: bool) -> None:
    if primed:
        prime(text)
    assert parse_instant(text) == micros
    moment = parse_datetime(text)
    assert moment.tzinfo is not None
    assert to_micros(moment) == micros


@pytest.mark.parametrize("primed", [False, True], ids=["new minute", "known minute"])
@pytest.mark.parametrize("text", REFUSED, ids=repr)
def test_refused_forms(text: Any, primed: bool) -> None:
    if primed:
        prime(text)
    with pytest.raises(InvalidTimestamp) as refused:
        parse_instant(text)
    assert str(refused.value).strip()
    with pytest.raises(InvalidTimestamp):
        parse_datetime(text)


def test_invalid_timestamp_is_a_value_error() -> None:
    """Callers (pydantic validators among them) may catch ValueError."""
    assert issubclass(InvalidTimestamp, ValueError)


def test_the_offset_is_kept_on_the_datetime() -> None:
    moment = parse_datetime("2026-03-01T09:00:00.250+01:00")
    assert moment.utcoffset() == timedelta(hours=1)
    assert moment == datetime(2026, 3, 1, 9, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=1)))
    assert parse_datetime("2026-03-01T03:00:00-05:00").utcoffset() == timedelta(hours=-5)


def test_instants_compare_across_offsets() -> None:
    in_order = [
        "2026-03-01T03:00:00-05:00",  # 08:00Z
        "2026-03-01T10:00:00.000001+02:00",  # 08:00:00.000001Z
        "2026-03-01T08:00:01Z",
        "2026-03-01T03:15:00-05:00",  # 08:15Z
        "2026-03-01T08:15:00.250Z",
        "2026-03-01T10:30:00+02:00",  # 08:30Z
    ]
    instants = [parse_instant(text) for text in in_order]
    assert instants == sorted(instants)
    assert len(set(instants)) == len(instants)
    assert parse_instant("2026-03-01T10:00:00+02:00") == parse_instant("2026-03-01T03:00:00-05:00")
    # The wall clock says the opposite of the instants.
    assert parse_instant("2026-03-01T09:00:00+02:00") < parse_instant("2026-03-01T08:00:00Z")


def test_an_offset_can_move_the_date() -> None:
    assert parse_instant("2026-03-01T01:00:00+02:00") == parse_instant("2026-02-28T23:00:00Z")
    assert parse_instant("2026-12-31T22:00:00-05:00") == parse_instant("2027-01-01T03:00:00Z")


@pytest.mark.parametrize(
    ("fraction", "micros"),
    [
        ("9", 900_000),
        ("999999", 999_999),
        ("9999999", 999_999),  # truncated, never rounded up into the next second
        ("999999999", 999_999),
        ("1234569", 123_456),
        ("0000009", 0),
    ],
)
def test_fractions_are_truncated_to_microseconds(fraction: str, micros: int) -> None:
    assert parse_instant(f"2026-03-01T08:00:00.{fraction}Z") == EIGHT_UTC + micros
    assert parse_datetime(f"2026-03-01T08:00:00.{fraction}Z").microsecond == micros


def test_micros_round_trip() -> None:
    assert from_micros(EIGHT_UTC + 250_000) == datetime(2026, 3, 1, 8, 0, 0, 250_000, tzinfo=UTC)
    assert format_micros(EIGHT_UTC) == "2026-03-01T08:00:00Z"
    assert format_micros(EIGHT_UTC + 250_000) == "2026-03-01T08:00:00.250000Z"
    assert parse_instant(format_micros(EIGHT_UTC + 1)) == EIGHT_UTC + 1
    assert to_micros(from_micros(-1)) == -1


FIRST, LAST = (
    to_micros(datetime.min.replace(tzinfo=UTC)),
    to_micros(datetime.max.replace(tzinfo=UTC)),
)


@settings(max_examples=500, deadline=None)
@given(
    micros=st.one_of(
        st.integers(FIRST, LAST),
        st.integers(-(10**12), 10**12),  # around the epoch
        st.sampled_from([FIRST, LAST, 0, -1, 951_782_400_000_000, 4_107_542_400_000_000]),
    )
)
def test_formatting_agrees_with_datetime(micros: int) -> None:
    # 951782400000000 is 2000-02-29, 4107542400000000 is 2100-03-01: leap rules.
    written = from_micros(micros).isoformat().replace("+00:00", "Z")
    assert format_micros(micros) == written
    six = from_micros(micros).isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert format_micros(micros, six_digits=True) == six
    assert to_micros(parse_datetime(six)) == micros


@pytest.mark.parametrize("micros", [FIRST - 1, LAST + 1])
def test_instants_outside_the_calendar_are_not_formatted(micros: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        format_micros(micros)


# Naive bounds, a day inside datetime's range either side; the zone is drawn below.
moments = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.builds(
        lambda minutes: timezone(timedelta(minutes=minutes)),
        st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    ),
)


def rfc3339(moment: datetime, digits: int, zulu: str) -> str:
    offset = moment.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    zone = zulu if zulu and not offset else f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    fraction = (
        f".{moment.microsecond:06d}{'7' * max(0, digits - 6)}"[: digits + 1] if digits else ""
    )
    return moment.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + fraction + zone


@settings(max_examples=300, deadline=None)
@given(moment=moments, digits=st.integers(0, 9), zulu=st.sampled_from(["", "Z", "z"]))
def test_every_written_instant_reads_back(moment: datetime, digits: int, zulu: str) -> None:
    text = rfc3339(moment, digits, zulu)
    prime(text)
    kept = moment.microsecond - moment.microsecond % 10 ** (6 - min(digits, 6))
    expected = to_micros(moment.replace(microsecond=kept))
    assert parse_instant(text) == expected
    assert to_micros(parse_datetime(text)) == expected


def two(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


@settings(max_examples=400, deadline=None)
@given(
    year=st.integers(0, 9999).map(lambda n: f"{n:04d}"),
    month=two(0, 13),
    day=two(0, 32),
    hour=two(0, 25),
    minute=two(0, 61),
    second=two(0, 99),
    fraction=st.sampled_from(["", ".5", ".123456789"]),
    zone=st.one_of(
        st.sampled_from(["Z", "z"]),
        st.tuples(st.sampled_from("+-"), two(0, 25), two(0, 61)).map(
            lambda parts: f"{parts[0]}{parts[1]}:{parts[2]}"
        ),
    ),
)
def test_the_fast_and_the_precise_reading_agree(
    year: str, month: str, day: str, hour: str, minute: str, second: str, fraction: str, zone: str
) -> None:
    """``parse_instant`` (hot path) and ``parse_datetime`` accept and refuse alike."""
    text = f"{year}-{month}-{day}T{hour}:{minute}:{second}{fraction}{zone}"
    prime(text)
    try:
        precise: int | None = to_micros(parse_datetime(text))
    except InvalidTimestamp:
        precise = None
    try:
        fast: int | None = parse_instant(text)
    except InvalidTimestamp:
        fast = None
    assert fast == precise
