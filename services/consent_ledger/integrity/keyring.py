"""The master keys (key-encryption keys) and the per-subject data keys they wrap.

Subject keys live in ``subject_keys`` wrapped by a master key, which comes from
configuration and never enters the database. Erasure deletes the subject's
row: without it, the subject's sealed payloads cannot be opened by anyone.

**Several master keys, for rotation** (CONTRACT §7). ``LEDGER_MASTER_KEY_FILE``
holds one master key per line, each the base64 of 32 bytes (blank lines and
lines starting with ``#`` are skipped); ``LEDGER_MASTER_KEY`` holds them
separated by commas or white space. The **last** one is the newest: it wraps
every new subject key. The others only unwrap, until ``consent-ledger keys
rotate-master`` has re-wrapped every subject key under the newest and retired
them. A key's id is the hex of the first 8 bytes of
``SHA-256(b"consent-ledger/master-key-id" || 0x00 || key)``: it names the key
without revealing it.

Wrapped subject key, version 2 (what :meth:`KeyRing.new_key` stores)::

    0x02 || master key id (8 bytes) || wrapped key version 1 (see .shredding)

Version 1 (``0x01 ...``, written before rotation existed) names no key: every
master key held is tried (AES-GCM tells the right one), newest first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from consent_ledger.integrity.shredding import (
    KEY_SIZE,
    KeyUnwrapError,
    KeyWrapper,
    new_subject_key,
)

MASTER_KEY_ID_SIZE = 8
_WRAPPED_V2 = 2
_ID_CONTEXT = b"consent-ledger/master-key-id\x00"


class MasterKeyError(ValueError):
    """The configured master key is missing or malformed."""


class MasterKeyUnavailable(MasterKeyError):
    """A subject key is wrapped by a master key this process does not hold (yet):
    its key file lacks a key that another process, or a rotation, already uses.
    Waiting helps once the file is updated; nothing about the data is wrong."""


def master_key_id(key: bytes) -> bytes:
    """The 8-byte id of a master key (module docstring)."""
    return hashlib.sha256(_ID_CONTEXT + key).digest()[:MASTER_KEY_ID_SIZE]


def wrapped_by(wrapped: bytes) -> bytes | None:
    """The id of the master key that wrapped ``wrapped``; None for version 1."""
    if len(wrapped) > 1 + MASTER_KEY_ID_SIZE and wrapped[0] == _WRAPPED_V2:
        return wrapped[1 : 1 + MASTER_KEY_ID_SIZE]
    return None


def wrapped_prefix(key_id: bytes) -> bytes:
    """The first bytes of every subject key wrapped by the master key ``key_id``."""
    return bytes((_WRAPPED_V2,)) + key_id


class MasterKeySource:
    """Where a process's master keys come from: a file (re-read when it changes,
    e.g. a secret updated in place) or a value of the environment."""

    def __init__(self, key_file: Path | None, key_text: str | None) -> None:
        if not key_text and key_file is None:
            raise MasterKeyError("no master key: set LEDGER_MASTER_KEY_FILE or LEDGER_MASTER_KEY")
        self.key_file = None if key_text else key_file
        self._text = key_text
        self._stamp: tuple[int, int, int] | None = None

    def read(self) -> list[bytes]:
        """Every master key, oldest first; raises MasterKeyError naming the source."""
        if self.key_file is None:
            assert self._text is not None
            return decode_master_keys(self._text, "LEDGER_MASTER_KEY")
        self._stamp = self._file_stamp()
        try:
            text = self.key_file.read_text("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise MasterKeyError(f"{self.key_file}: cannot read: {reason}") from None
        return decode_master_keys(text, str(self.key_file))

    def changed(self) -> bool:
        """Whether the file changed since it was last read (one ``stat``)."""
        return self.key_file is not None and self._file_stamp() != self._stamp

    def _file_stamp(self) -> tuple[int, int, int] | None:
        assert self.key_file is not None
        try:
            status = self.key_file.stat()
        except OSError:
            return None
        return status.st_mtime_ns, status.st_size, status.st_ino


class KeyRing:
    """Makes, unwraps and re-wraps subject keys under the master keys; payloads
    are sealed and opened with them by :mod:`.shredding`.

    Given a :class:`MasterKeySource`, :meth:`refresh` takes up a changed key
    file, and unwrapping a key of a master key not held re-reads the file once
    before it raises :class:`MasterKeyUnavailable`."""

    def __init__(
        self, master_keys: bytes | Sequence[bytes], source: MasterKeySource | None = None
    ) -> None:
        self._source = source
        self._use(list(master_keys) if not isinstance(master_keys, bytes) else [master_keys])

    @classmethod
    def from_source(cls, source: MasterKeySource) -> KeyRing:
        return cls(source.read(), source)

    def _use(self, keys: list[bytes]) -> None:
        if not keys:
            raise MasterKeyError("no master key given")
        for key in keys:
            if len(key) != KEY_SIZE:
                raise MasterKeyError(f"the master key must be {KEY_SIZE} bytes, got {len(key)}")
        self._wrappers = {master_key_id(key): KeyWrapper(key) for key in keys}
        self.newest_id = master_key_id(keys[-1])
        self._newest = self._wrappers[self.newest_id]
        self._prefix = wrapped_prefix(self.newest_id)

    @property
    def key_ids(self) -> list[bytes]:
        """The ids of the master keys held, oldest first (the newest last)."""
        return list(self._wrappers)

    def refresh(self) -> bool:
        """Re-read the key file if it changed; True when the keys were reloaded."""
        if self._source is None or not self._source.changed():
            return False
        self._use(self._source.read())
        return True

    def new_key(self, subject: str) -> tuple[bytes, bytes]:
        """A fresh data key for ``subject`` and its form wrapped by the newest master key."""
        key = new_subject_key()
        return key, self._prefix + self._newest.wrap(subject, key)

    def unwrap(self, subject: str, wrapped: bytes) -> bytes:
        """The subject key; raises KeyUnwrapError when no master key held opens it,
        MasterKeyUnavailable when the master key it names is not held."""
        key_id = wrapped_by(wrapped)
        if key_id is None:
            for wrapper in reversed(self._wrappers.values()):
                try:
                    return wrapper.unwrap(subject, wrapped)
                except KeyUnwrapError:
                    continue
            raise KeyUnwrapError(f"no master key held unwraps the subject key of {subject!r}")
        held = self._wrappers.get(key_id)
        if held is None and self._source is not None:
            self._use(self._source.read())
            held = self._wrappers.get(key_id)
        if held is None:
            where = self._source.key_file if self._source is not None else None
            raise MasterKeyUnavailable(
                f"the subject key of {subject!r} is wrapped by master key {key_id.hex()}, "
                f"which {where or 'the configured master keys'} does not hold: give every "
                "worker and API the newest key file"
            )
        return held.unwrap(subject, wrapped[1 + MASTER_KEY_ID_SIZE :])

    def is_newest(self, wrapped: bytes) -> bool:
        return wrapped.startswith(self._prefix)

    def rewrap(self, subject: str, wrapped: bytes) -> bytes:
        """``wrapped``'s subject key wrapped by the newest master key (the same
        bytes when it already is)."""
        if self.is_newest(wrapped):
            return wrapped
        return self._prefix + self._newest.wrap(subject, self.unwrap(subject, wrapped))


_SEPARATORS = re.compile(r"[\s,]+")


def decode_master_keys(text: str, origin: str) -> list[bytes]:
    """Master keys from text: base64 values separated by line breaks, commas or
    spaces; blank lines and ``#`` comment lines skipped. Oldest first."""
    values = [
        value
        for line in text.splitlines()
        if not line.lstrip().startswith("#")
        for value in _SEPARATORS.split(line.strip())
        if value
    ]
    if not values:
        raise MasterKeyError(f"{origin}: holds no master key")
    return [
        decode_master_key(value, f"{origin}, key {number}")
        for number, value in enumerate(values, 1)
    ]


def decode_master_key(text: str, origin: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{origin}: not base64") from None
    if len(key) != KEY_SIZE:
        raise MasterKeyError(f"{origin}: must decode to {KEY_SIZE} bytes, got {len(key)}")
    return key


def load_keyring(key_file: Path | None, key_text: str | None) -> KeyRing:
    """The key ring of ``LEDGER_MASTER_KEY_FILE`` or ``LEDGER_MASTER_KEY`` (the
    value wins when both are set); a file is re-read when it changes."""
    return KeyRing.from_source(MasterKeySource(key_file, key_text))


def load_master_key(key_file: Path | None, key_text: str | None) -> bytes:
    """The newest master key from a file or a base64 value; one must be given."""
    return MasterKeySource(key_file, key_text).read()[-1]


def create_master_key_file(path: Path) -> bytes:
    """Create a new random master key file (mode 0600) unless one exists; return
    its newest key."""
    if path.exists():
        return load_master_key(path, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(KEY_SIZE)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
    return key


def add_master_key(path: Path) -> bytes:
    """Append a new random master key to the key file, which it then names as the
    newest; return its id. The file is replaced whole (written beside it, then
    renamed), so a reader never sees half a line; it stays 0600."""
    existing = path.read_text("ascii")
    decode_master_keys(existing, str(path))  # never extend a file that is already broken
    key = os.urandom(KEY_SIZE)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(existing.rstrip("\n") + "\n" + base64.b64encode(key).decode() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    return master_key_id(key)
