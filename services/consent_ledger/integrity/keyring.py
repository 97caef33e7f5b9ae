"""The master key (key-encryption key) and the per-subject data keys it wraps.

Subject keys live in ``subject_keys`` wrapped by the master key, which comes
from configuration (``LEDGER_MASTER_KEY_FILE`` or ``LEDGER_MASTER_KEY``, base64
of 32 bytes) and never enters the database. Erasure deletes the subject's row:
without it, the subject's sealed payloads cannot be opened by anyone.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from consent_ledger.integrity.shredding import KEY_SIZE, KeyWrapper, new_subject_key


class MasterKeyError(ValueError):
    """The configured master key is missing or malformed."""


class KeyRing:
    """Makes and unwraps subject keys under the master key; payloads are sealed
    and opened with them by :mod:`.shredding`."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != KEY_SIZE:
            raise MasterKeyError(f"the master key must be {KEY_SIZE} bytes, got {len(master_key)}")
        self._wrapper = KeyWrapper(master_key)

    def new_key(self, subject: str) -> tuple[bytes, bytes]:
        """A fresh data key for ``subject`` and its wrapped form to store."""
        key = new_subject_key()
        return key, self._wrapper.wrap(subject, key)

    def unwrap(self, subject: str, wrapped: bytes) -> bytes:
        return self._wrapper.unwrap(subject, wrapped)


def decode_master_key(text: str, origin: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{origin}: not base64") from None
    if len(key) != KEY_SIZE:
        raise MasterKeyError(f"{origin}: must decode to {KEY_SIZE} bytes, got {len(key)}")
    return key


def load_master_key(key_file: Path | None, key_text: str | None) -> bytes:
    """The master key from a file or a base64 value; one of them must be given."""
    if key_text:
        return decode_master_key(key_text, "LEDGER_MASTER_KEY")
    if key_file is None:
        raise MasterKeyError("no master key: set LEDGER_MASTER_KEY_FILE or LEDGER_MASTER_KEY")
    try:
        return decode_master_key(key_file.read_text("ascii"), str(key_file))
    except OSError as exc:
        raise MasterKeyError(f"{key_file}: cannot read: {exc.strerror or exc}") from None


def create_master_key_file(path: Path) -> bytes:
    """Create a new random master key file (mode 0600) unless one exists; return the key."""
    if path.exists():
        return load_master_key(path, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(KEY_SIZE)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
    return key
