"""Opaque cursors for keyset pagination.

A cursor is the sort key of the last item of a page, tagged with the listing it
belongs to and base64url-encoded: clients pass it back as it is and never
build one. The tag keeps a cursor of one listing from being read by another.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000

_NUMBERS = re.compile(r"-?\d{1,19}(?:,-?\d{1,19})*\Z")
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1  # every sort key is a PostgreSQL bigint


class InvalidCursor(ValueError):
    """The cursor was not issued by this listing (or was altered)."""


def encode_cursor(listing: str, *key: int) -> str:
    text = f"{listing}:{','.join(str(part) for part in key)}"
    return base64.urlsafe_b64encode(text.encode("ascii")).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, listing: str, size: int) -> tuple[int, ...]:
    """The sort key in ``cursor``, which must come from ``listing`` and hold ``size`` numbers."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidCursor("not a cursor this API issued") from None
    tag, _, numbers = text.partition(":")
    if tag != listing:
        raise InvalidCursor(f"not a cursor of this listing ({listing})")
    if not _NUMBERS.match(numbers):
        raise InvalidCursor("not a cursor this API issued")
    key = tuple(int(part) for part in numbers.split(","))
    if len(key) != size or not all(_BIGINT_MIN <= number <= _BIGINT_MAX for number in key):
        raise InvalidCursor("not a cursor this API issued")
    return key
