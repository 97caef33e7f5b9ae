"""RFC 3339 ``date-time`` timestamps, exactly as the contract defines them.

Seconds are required, a fraction is optional, an offset (``Z``, ``z`` or
``±hh:mm``) is required. Other ISO 8601 forms are refused. Instants are kept as
integer microseconds since the Unix epoch so that they compare across offsets
cheaply; digits of a fraction beyond the sixth are truncated.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

RFC3339_PATTERN = r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
# RFC 3339 digits are ASCII: without re.ASCII, \d also matches e.g. Arabic-Indic digits.
_RFC3339: Final = re.compile(RFC3339_PATTERN.replace("$", r"\Z"), re.ASCII)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ZONES: Final[dict[int, timezone]] = {}


class InvalidTimestamp(ValueError):
    """The text is not an RFC 3339 date-time with a zone offset."""


_DAYS_IN_MONTH: Final = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


# "YYYY-MM-DDTHH:MM" -> the start of that minute (UTC), in microseconds since the
# epoch. Module constants are Final and products stay below 2**30 a factor, so
# that the compiled core reads them without a dictionary look-up and multiplies
# without boxing (mypyc's fast path; callgrind: a third of this module's cost).
_MINUTES: Final[dict[str, int]] = {}
_MICROS_A_MINUTE: Final = 60_000_000


def parse_instant(text: object) -> int:
    """Return the instant ``text`` names, in microseconds since the epoch (UTC).

    The hot path of intake: integer arithmetic and a cache of the minutes seen,
    no datetime objects; anything unusual goes the slow, precise way.
    """
    if not isinstance(text, str):
        return to_micros(parse_datetime(text))  # raises: not a string
    minute = _MINUTES.get(text[:16])
    if minute is None:
        minute = _remember_minute(text)
    if minute is not None:
        instant = _instant_in_known_minute(text, minute)
        if instant is not None:
            return instant
    return to_micros(parse_datetime(text))  # a leap second, or raises with the precise problem


def _instant_in_known_minute(text: str, minute: int) -> int | None:
    """The instant of ``text`` whose first 16 characters are a minute read before
    (so a valid ``YYYY-MM-DDTHH:MM``, starting at ``minute`` µs), checking the rest character by character,
    which compiled is several times cheaper than the pattern; None for anything
    else, leap seconds included."""
    length = len(text)
    if length < 20 or text[16] != ":":
        return None
    second = _number(text, 17, 19)
    if not 0 <= second < 60:
        return None
    last = text[length - 1]
    if last == "Z" or last == "z":
        end, offset = length - 1, 0
    elif length >= 25 and text[length - 3] == ":" and text[length - 6] in ("+", "-"):
        hours, mins = _number(text, length - 5, length - 3), _number(text, length - 2, length)
        if not (0 <= hours <= 23 and 0 <= mins <= 59):
            return None
        offset = hours * 60 + mins
        if text[length - 6] == "-":
            offset = -offset
        end = length - 6
    else:
        return None
    micros = 0
    if end > 19:
        kept = min(end, 26)  # digits beyond the sixth are truncated, but must be digits
        micros = _number(text, 20, kept)
        if text[19] != "." or end == 20 or micros < 0 or _number(text, kept, end) < 0:
            return None
        micros *= _SCALE[kept - 20]
    elif end != 19:
        return None
    instant = minute - offset * _MICROS_A_MINUTE + second * 1_000_000 + micros
    return instant if _FIRST_INSTANT <= instant <= _LAST_INSTANT else None


# A fraction of n digits, in microseconds. A list: compiled, a Final tuple of
# ints is kept unboxed and boxed again, all of it, at each indexing.
_SCALE: Final = [1, 100_000, 10_000, 1_000, 100, 10, 1]


def _number(text: str, start: int, end: int) -> int:
    """The ASCII digits ``text[start:end]`` as a number (0 when empty), or -1
    when any of them is not one."""
    value = 0
    for index in range(start, end):
        digit = ord(text[index]) - 48
        if not 0 <= digit <= 9:
            return -1
        value = value * 10 + digit
    return value


def _remember_minute(text: str) -> int | None:
    """The start of the minute ``text`` starts with, in microseconds since the
    epoch, remembered for the next time, when ``text`` has the pattern's form and
    that minute exists."""
    if _RFC3339.match(text) is None:
        return None
    minutes = _minutes_since_epoch(text)
    if minutes is None:
        return None
    if len(_MINUTES) > 100_000:
        _MINUTES.clear()
    minute = _MINUTES[text[:16]] = minutes * _MICROS_A_MINUTE
    return minute


def _minutes_since_epoch(text: str) -> int | None:
    """Minutes since the epoch of the wall-clock ``YYYY-MM-DDTHH:MM`` prefix, or
    None when it is no real date and time."""
    y, mo, d, h, mi = (
        int(text[:4]),
        int(text[5:7]),
        int(text[8:10]),
        int(text[11:13]),
        int(text[14:16]),
    )
    leap_year = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    if (
        y == 0
        or not 1 <= mo <= 12
        or not 1 <= d <= (29 if mo == 2 and leap_year else _DAYS_IN_MONTH[mo])
        or h > 23
        or mi > 59
    ):
        return None
    return (_days_from_civil(y, mo, d) * 24 + h) * 60 + mi


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def parse_datetime(text: object) -> datetime:
    """Return ``text`` as an aware datetime, or raise :class:`InvalidTimestamp`."""
    if not isinstance(text, str):
        raise InvalidTimestamp(f"expected a string, got {type(text).__name__}")
    match = _RFC3339.match(text)
    if match is None:
        raise InvalidTimestamp(f"{text!r} is not an RFC 3339 date-time with an offset")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if zulu:
        zone: timezone = UTC
    else:
        hours, minutes = int(off_h), int(off_m)
        if hours > 23 or minutes > 59:
            raise InvalidTimestamp(f"{text!r} has an impossible offset")
        offset = (hours * 60 + minutes) * (1 if sign == "+" else -1)
        zone = _ZONES.get(offset) or _ZONES.setdefault(offset, timezone(timedelta(minutes=offset)))
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    leap = second == "60"
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            59 if leap else int(second),
            micros,
            tzinfo=zone,
        )
        # A leap second (hh:mm:60) is the instant just after hh:mm:59.
        if leap:
            moment += timedelta(seconds=1)
        # An instant must exist in UTC too, or formatting it later overflows.
        moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidTimestamp(f"{text!r} is not a real date and time: {exc}") from None
    return moment


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact, no floats).

    Raises ValueError for a naive datetime."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a timestamp must be timezone-aware")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_FIRST_INSTANT: Final = to_micros(datetime.min.replace(tzinfo=UTC))
_LAST_INSTANT: Final = to_micros(datetime.max.replace(tzinfo=UTC))


def from_micros(micros: int) -> datetime:
    """The UTC datetime of an instant in microseconds since the epoch.

    Raises ValueError when that instant is outside years 1..9999."""
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise ValueError(f"{micros} microseconds since the epoch is out of range") from None


def format_micros(micros: int, *, six_digits: bool = False) -> str:
    """An instant as RFC 3339 in UTC, e.g. ``2026-03-01T08:00:00.250000Z``, with
    no fraction when it is zero, as ``datetime.isoformat`` writes it; with
    ``six_digits``, always six fraction digits (one text per instant, as the
    ledger's signed formats need).

    The project's one RFC 3339 formatter.
    Integer arithmetic: every violation's explanation formats a time or two.
    Raises ValueError when that instant is outside years 1..9999."""
    if not _FIRST_INSTANT <= micros <= _LAST_INSTANT:
        raise ValueError(f"{micros} microseconds since the epoch is out of range")
    # // and %, not divmod: compiled, these are native, divmod a Python call.
    days, micros_of_day = micros // 86_400_000_000, micros % 86_400_000_000
    seconds, fraction = micros_of_day // 1_000_000, micros_of_day % 1_000_000
    year, month, day = _civil_from_days(days)
    hour, seconds = seconds // 3600, seconds % 3600
    minute, second = seconds // 60, seconds % 60
    two = _TWO_DIGITS  # format specifications cost more than the rest together
    stamp = (
        f"{str(10_000 + year)[1:]}-{two[month]}-{two[day]}T{two[hour]}:{two[minute]}:{two[second]}"
    )
    return f"{stamp}.{str(1_000_000 + fraction)[1:]}Z" if fraction or six_digits else f"{stamp}Z"


_TWO_DIGITS: Final = [f"{number:02d}" for number in range(100)]


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day counted from 1970-01-01 (the inverse of
    :func:`_days_from_civil`, H. Hinnant's algorithm)."""
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153  # March is 0
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + 3 if shifted_month < 10 else shifted_month - 9
    return year_of_era + era * 400 + (month <= 2), month, day
