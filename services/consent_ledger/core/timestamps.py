"""RFC 3339 ``date-time`` timestamps, exactly as the contract defines them.

Seconds are required, a fraction is optional, an offset (``Z``, ``z`` or
``±hh:mm``) is required. Other ISO 8601 forms are refused. Instants are kept as
integer microseconds since the Unix epoch so that they compare across offsets
cheaply; digits of a fraction beyond the sixth are truncated.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZONES: dict[int, timezone] = {}


class InvalidTimestamp(ValueError):
    """The text is not an RFC 3339 date-time with a zone offset."""


def parse_instant(text: str) -> int:
    """Return the instant ``text`` names, in microseconds since the epoch (UTC)."""
    return to_micros(parse_datetime(text))


def parse_datetime(text: str) -> datetime:
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
    except ValueError as exc:
        raise InvalidTimestamp(f"{text!r} is not a real date and time: {exc}") from None
    # A leap second (hh:mm:60) is the instant just after hh:mm:59.
    return moment + timedelta(seconds=1) if leap else moment


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC datetime of an instant in microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def format_micros(micros: int) -> str:
    """An instant as RFC 3339 in UTC, e.g. ``2026-03-01T08:00:00.250000Z``."""
    return from_micros(micros).isoformat().replace("+00:00", "Z")
