"""The canonical, versioned byte encoding of a ledger entry: what a Merkle leaf covers.

A leaf commits to where and when the ledger recorded an event and to the exact
bytes it stored, never to personal data in the clear: the payload is referred
to by the SHA-256 of its *ciphertext* (see :mod:`.shredding`), so destroying a
subject's key leaves every leaf hash, proof and checkpoint valid.

Encoding, format version 1 (all integers big-endian, no padding, nothing
optional, so equal entries give equal bytes and different entries different
bytes)::

    offset  size  field
    0       4     magic  b"CLE" followed by the format version byte 0x01
    4       2     n = length of event_id in bytes (u16, 1..65535)
    6       n     event_id, UTF-8 (the CloudEvents id)
    6+n     4     partition (u32): the Kafka partition, i.e. which Merkle log
    10+n    8     offset (u64): the Kafka offset of the record
    18+n    8     recorded_at (i64): microseconds since 1970-01-01T00:00:00Z at
                  which the ledger recorded the entry
    26+n    32    payload_sha256: SHA-256 of the stored payload ciphertext

Total ``58 + n`` bytes. The leaf hash is ``SHA-256(0x00 || encoding)``
(:func:`.merkle.leaf_hash`).

The JSON form (used in proof documents, :mod:`.proofs`) is::

    {"version": 1, "event_id": "...", "partition": 0, "offset": 41,
     "recorded_at": "2026-03-01T08:00:00.123456Z", "payload_sha256": "<64 hex>"}

with ``recorded_at`` always UTC, six fraction digits and ``Z``.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from consent_ledger.core.timestamps import format_micros, from_micros, parse_datetime, to_micros
from consent_ledger.integrity.merkle import leaf_hash as _leaf_hash

__all__ = [
    "ENTRY_FORMAT_VERSION",
    "LedgerEntry",
    "decode_entry",
    "encode_entry",
    "format_timestamp",
    "from_micros",
    "parse_timestamp",
    "to_micros",
]

ENTRY_FORMAT_VERSION: Final = 1
_MAGIC: Final = b"CLE"
_FIXED = struct.Struct(">IQq32s")  # partition, offset, recorded_at µs, payload_sha256
_U16 = struct.Struct(">H")
_MAX_PARTITION: Final = 2**32 - 1
_MAX_OFFSET: Final = 2**64 - 1
# What the signed formats accept of RFC 3339: at most six fraction digits (entries
# are hashed at microsecond precision) and no leap second (one text per instant).
_SIGNED_FORM: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:[0-5]\d(?:\.\d{1,6})?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def format_timestamp(instant: datetime) -> str:
    """RFC 3339 in UTC with exactly six fraction digits and ``Z``: one text per instant."""
    return format_micros(to_micros(instant), six_digits=True)  # refuses naive datetimes


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with a zone offset into a UTC datetime.

    Raises ValueError when the text is not ``YYYY-MM-DDTHH:MM:SS[.ffffff]``
    followed by ``Z`` or ``±hh:mm``; more than six fraction digits are refused
    rather than silently rounded, since entries are hashed at microsecond precision.
    """
    if not isinstance(text, str) or not _SIGNED_FORM.fullmatch(text):
        raise ValueError(
            f"not an RFC 3339 timestamp with offset and at most 6 fraction digits: {text!r}"
        )
    return parse_datetime(text).astimezone(UTC)


def encode_entry(
    event_id: str,
    partition: int,
    offset: int,
    recorded_at: datetime,
    payload_sha256: bytes,
) -> bytes:
    """The version-1 canonical encoding documented in the module docstring.

    Raises:
        ValueError: empty or over-long event id, partition or offset out of
            range, naive ``recorded_at``, or a digest that is not 32 bytes.
    """
    if not isinstance(event_id, str):
        raise ValueError("event_id must be a string")
    raw_id = event_id.encode("utf-8")
    if not raw_id or len(raw_id) > 0xFFFF:
        raise ValueError(f"event_id must be 1..65535 bytes of UTF-8, got {len(raw_id)}")
    if not 0 <= partition <= _MAX_PARTITION:
        raise ValueError(f"partition {partition} is outside 0..{_MAX_PARTITION}")
    if not 0 <= offset <= _MAX_OFFSET:
        raise ValueError(f"offset {offset} is outside 0..{_MAX_OFFSET}")
    if len(payload_sha256) != 32:
        raise ValueError(f"payload_sha256 must be 32 bytes, got {len(payload_sha256)}")
    return b"".join(
        (
            _MAGIC,
            bytes((ENTRY_FORMAT_VERSION,)),
            _U16.pack(len(raw_id)),
            raw_id,
            _FIXED.pack(partition, offset, to_micros(recorded_at), payload_sha256),
        )
    )


def decode_entry(data: bytes) -> LedgerEntry:
    """Parse bytes written by :func:`encode_entry`; the inverse, byte for byte.

    Raises ValueError on a wrong magic or version, a truncated or over-long
    input, or an event id that is not UTF-8.
    """
    if len(data) < 6 or data[:3] != _MAGIC:
        raise ValueError("not a ledger entry encoding (bad magic)")
    if data[3] != ENTRY_FORMAT_VERSION:
        raise ValueError(f"unknown ledger entry format version {data[3]}")
    (id_len,) = _U16.unpack_from(data, 4)
    if len(data) != 6 + id_len + _FIXED.size:
        raise ValueError("ledger entry encoding has the wrong length")
    event_id = data[6 : 6 + id_len].decode("utf-8")
    partition, offset, micros, digest = _FIXED.unpack_from(data, 6 + id_len)
    return LedgerEntry(
        event_id=event_id,
        partition=partition,
        offset=offset,
        recorded_at=from_micros(micros),
        payload_sha256=digest,
    )


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One accepted event as the ledger committed to it.

    ``recorded_at`` is normalised to UTC and microseconds (the encoding's
    precision); construction fails with ValueError on anything
    :func:`encode_entry` would refuse, so every instance encodes.
    """

    event_id: str
    partition: int
    offset: int
    recorded_at: datetime
    payload_sha256: bytes
    version: int = ENTRY_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.version != ENTRY_FORMAT_VERSION:
            raise ValueError(f"unsupported ledger entry format version {self.version}")
        object.__setattr__(self, "recorded_at", from_micros(to_micros(self.recorded_at)))
        object.__setattr__(self, "payload_sha256", bytes(self.payload_sha256))
        self.encode()  # validates every field

    def encode(self) -> bytes:
        """The canonical bytes the Merkle leaf is hashed over."""
        return encode_entry(
            self.event_id, self.partition, self.offset, self.recorded_at, self.payload_sha256
        )

    def leaf_hash(self) -> bytes:
        """``SHA-256(0x00 || self.encode())``."""
        return _leaf_hash(self.encode())

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON form documented in the module docstring."""
        return {
            "version": self.version,
            "event_id": self.event_id,
            "partition": self.partition,
            "offset": self.offset,
            "recorded_at": format_timestamp(self.recorded_at),
            "payload_sha256": self.payload_sha256.hex(),
        }

    @classmethod
    def from_json_dict(cls, data: Any) -> LedgerEntry:
        """Parse the JSON form strictly (exact keys, exact types).

        Raises ValueError naming the first field that is missing or wrong.
        """
        if not isinstance(data, dict):
            raise ValueError("entry must be a JSON object")
        expected = {"version", "event_id", "partition", "offset", "recorded_at", "payload_sha256"}
        if set(data) != expected:
            missing = sorted(expected - set(data))
            extra = sorted(set(data) - expected)
            raise ValueError(f"entry fields wrong: missing {missing}, unexpected {extra}")
        for name in ("version", "partition", "offset"):
            if type(data[name]) is not int:
                raise ValueError(f"entry.{name} must be an integer")
        for name in ("event_id", "recorded_at", "payload_sha256"):
            if not isinstance(data[name], str):
                raise ValueError(f"entry.{name} must be a string")
        digest_hex: str = data["payload_sha256"]
        if len(digest_hex) != 64 or digest_hex != digest_hex.lower():
            raise ValueError("entry.payload_sha256 must be 64 lowercase hex digits")
        try:
            digest = bytes.fromhex(digest_hex)
        except ValueError:
            raise ValueError("entry.payload_sha256 must be 64 lowercase hex digits") from None
        try:
            recorded_at = parse_timestamp(data["recorded_at"])
        except ValueError as exc:
            raise ValueError(f"entry.recorded_at: {exc}") from None
        return cls(
            event_id=data["event_id"],
            partition=data["partition"],
            offset=data["offset"],
            recorded_at=recorded_at,
            payload_sha256=digest,
            version=data["version"],
        )
