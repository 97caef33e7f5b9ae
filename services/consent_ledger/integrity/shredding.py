"""Crypto-shredding: personal payloads sealed under a per-subject key that erasure destroys.

Every stored payload is AES-256-GCM ciphertext under its subject's 32-byte data
key. The ledger's leaf hashes cover the sealed bytes (``payload_sha256`` in
:mod:`.entry`), so deleting the key makes the payload unreadable while every
hash, proof and checkpoint still verifies.

Sealed payload, version 1::

    0x01 || nonce (12 random bytes) || AES-256-GCM ciphertext || tag (16 bytes)

The associated data binds the ciphertext to its place, so a sealed payload
copied to another entry or subject fails to open::

    b"consent-ledger/payload" || 0x01 ||
    u32 BE len(subject) || subject UTF-8 || u32 BE len(event_id) || event_id UTF-8

Subject keys may be stored wrapped by a key-encryption key (KEK, 32 bytes,
from configuration): ``0x01 || nonce (12) || AES-256-GCM(subject key) || tag``
with associated data ``b"consent-ledger/subject-key" || 0x01 || u32 BE
len(subject) || subject``, so a wrapped key only unwraps for its own subject.

Random 96-bit nonces are safe here: a subject key seals that subject's events
only, far below the 2**32 messages per key NIST SP 800-38D allows.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_SIZE",
    "KeyUnwrapError",
    "PayloadUnreadable",
    "SubjectSealer",
    "new_subject_key",
    "open_sealed",
    "seal",
    "unwrap_key",
    "wrap_key",
]

KEY_SIZE: Final = 32
"""Bytes in a subject key and in a key-encryption key (AES-256)."""

_VERSION: Final = 1
_NONCE_SIZE: Final = 12
_TAG_SIZE: Final = 16
_PAYLOAD_CONTEXT: Final = b"consent-ledger/payload"
_KEY_CONTEXT: Final = b"consent-ledger/subject-key"
_U32 = struct.Struct(">I")


class PayloadUnreadable(Exception):
    """A sealed payload cannot be opened.

    The key is wrong or was shredded, the payload belongs to another subject or
    event, or its bytes were altered; AES-GCM does not say which.
    """


class KeyUnwrapError(Exception):
    """A wrapped subject key cannot be unwrapped: wrong KEK, wrong subject, or altered."""


def _length_prefixed(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def _payload_aad(subject: str, event_id: str) -> bytes:
    return (
        _PAYLOAD_CONTEXT
        + bytes((_VERSION,))
        + _length_prefixed(subject)
        + _length_prefixed(event_id)
    )


def _key_aad(subject: str) -> bytes:
    return _KEY_CONTEXT + bytes((_VERSION,)) + _length_prefixed(subject)


def _check_key(key: bytes, what: str) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ValueError(f"{what} must be {KEY_SIZE} bytes")


class _Nonces:
    """Random 96-bit nonces, drawn from the OS's CSPRNG a thousand at a time
    (one system call each per thousand seals instead of one per seal)."""

    def __init__(self, per_draw: int = 1024) -> None:
        self._per_draw = per_draw
        self._pool = b""
        self._next = 0  # where the next nonce starts in the pool
        self._lock = threading.Lock()
        # A forked child must not hand out the nonces its parent still holds.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool = b""
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> bytes:
        with self._lock:
            start = self._next
            if start >= len(self._pool):
                self._pool = os.urandom(_NONCE_SIZE * self._per_draw)
                start = 0
            self._next = start + _NONCE_SIZE
            return self._pool[start : start + _NONCE_SIZE]


_NONCES = _Nonces()
_VERSION_BYTE: Final = bytes((_VERSION,))


def _seal(cipher: AESGCM, aad: bytes, plaintext: bytes) -> bytes:
    nonce = _NONCES.take()
    return _VERSION_BYTE + nonce + cipher.encrypt(nonce, plaintext, aad)


class SubjectSealer:
    """:func:`seal` for many payloads of one subject: one AES-GCM context and
    the subject's part of the associated data prepared once (the worker seals
    a batch's events subject by subject)."""

    def __init__(self, key: bytes, subject: str) -> None:
        _check_key(key, "a subject key")
        self._cipher = AESGCM(key)
        self._aad_prefix = _PAYLOAD_CONTEXT + _VERSION_BYTE + _length_prefixed(subject)

    def seal(self, event_id: str, plaintext: bytes) -> bytes:
        """Exactly what ``seal(key, subject, event_id, plaintext)`` gives."""
        return _seal(self._cipher, self._aad_prefix + _length_prefixed(event_id), plaintext)


def _open(cipher: AESGCM, aad: bytes, sealed: bytes) -> bytes | None:
    """The plaintext, or None when the bytes do not authenticate."""
    if len(sealed) < 1 + _NONCE_SIZE + _TAG_SIZE or sealed[0] != _VERSION:
        return None
    nonce = sealed[1 : 1 + _NONCE_SIZE]
    try:
        return cipher.decrypt(nonce, sealed[1 + _NONCE_SIZE :], aad)
    except InvalidTag:
        return None


def new_subject_key() -> bytes:
    """A fresh random 32-byte AES-256 data key for one subject."""
    return AESGCM.generate_key(bit_length=256)


def seal(key: bytes, subject: str, event_id: str, plaintext: bytes) -> bytes:
    """Encrypt one event's payload for ``subject`` (format in the module docstring).

    Raises ValueError when ``key`` is not 32 bytes.
    """
    return SubjectSealer(key, subject).seal(event_id, plaintext)


def open_sealed(key: bytes, subject: str, event_id: str, sealed: bytes) -> bytes:
    """Decrypt a payload sealed by :func:`seal` for this subject and event.

    Raises:
        PayloadUnreadable: wrong key, wrong subject or event id, unknown
            version, truncated or altered bytes.
        ValueError: ``key`` is not 32 bytes (a programming error, not a shredded key).
    """
    _check_key(key, "a subject key")
    plaintext = _open(AESGCM(key), _payload_aad(subject, event_id), sealed)
    if plaintext is None:
        raise PayloadUnreadable(
            f"payload of event {event_id!r} cannot be opened with this key "
            "(wrong or shredded key, wrong subject or event, or altered bytes)"
        )
    return plaintext


class KeyWrapper:
    """Wraps and unwraps subject keys under one key-encryption key, with one
    AES-GCM context (the worker unwraps the keys of every subject in a batch)."""

    def __init__(self, kek: bytes) -> None:
        _check_key(kek, "the key-encryption key")
        self._cipher = AESGCM(kek)

    def wrap(self, subject: str, subject_key: bytes) -> bytes:
        """Encrypt a subject key, bound to ``subject``.

        Raises ValueError when the subject key is not 32 bytes."""
        _check_key(subject_key, "a subject key")
        return _seal(self._cipher, _key_aad(subject), subject_key)

    def unwrap(self, subject: str, wrapped: bytes) -> bytes:
        """Recover a subject key wrapped for the same subject.

        Raises KeyUnwrapError: wrong KEK, another subject's key, or altered bytes."""
        key = _open(self._cipher, _key_aad(subject), wrapped)
        if key is None or len(key) != KEY_SIZE:
            raise KeyUnwrapError(
                "the wrapped subject key cannot be unwrapped with this KEK for this subject"
            )
        return key


def wrap_key(kek: bytes, subject: str, subject_key: bytes) -> bytes:
    """Encrypt a subject key under the key-encryption key, bound to ``subject``.

    Raises ValueError when either key is not 32 bytes.
    """
    return KeyWrapper(kek).wrap(subject, subject_key)


def unwrap_key(kek: bytes, subject: str, wrapped: bytes) -> bytes:
    """Recover a subject key wrapped by :func:`wrap_key` for the same subject.

    Raises:
        KeyUnwrapError: wrong KEK, another subject's key, or altered bytes.
        ValueError: ``kek`` is not 32 bytes.
    """
    return KeyWrapper(kek).unwrap(subject, wrapped)
