"""Signed checkpoints: one Ed25519 signature over every partition's Merkle tree head.

A checkpoint says "at ``issued_at``, log ``log_id`` had these partitions, each
with this many leaves and this root". An auditor who holds one can check any
inclusion or consistency proof (:mod:`.proofs`) without trusting the server.

Signed bytes (``Checkpoint.signed_bytes()``), UTF-8 text in the spirit of the
C2SP tlog-checkpoint format, every line ending in ``\\n`` (including the last),
nothing else before or after::

    consent-ledger checkpoint v1
    <log_id>
    <issued_at>
    <partition> <size> <root>
    ...

* ``log_id``: printable, non-empty, no leading or trailing white space.
* ``issued_at``: RFC 3339 in UTC, six fraction digits, ``Z``
  (``2026-03-01T08:00:00.000000Z``).
* one tree-head line per partition, ascending by partition, partitions unique;
  ``partition`` and ``size`` in decimal without leading zeros, ``root`` the
  32-byte tree hash in standard base64 with padding. A partition whose log is
  empty has size 0 and root ``SHA-256("")``.

The signature is Ed25519 (RFC 8032) over exactly these bytes.

JSON form of a signed checkpoint (``SignedCheckpoint.to_json()``)::

    {
      "format": "consent-ledger/checkpoint/v1",
      "log_id": "consent-ledger/prod",
      "issued_at": "2026-03-01T08:00:00.000000Z",
      "tree_heads": [{"partition": 0, "size": 12, "root": "<base64>"}, ...],
      "key_id": "<32 hex digits: first 16 bytes of SHA-256(raw public key)>",
      "signature": "<base64 of the 64-byte Ed25519 signature>"
    }

The JSON is a carrier only: verification rebuilds the signed bytes from the
fields, so key order and white space in the JSON do not matter.

Apart from :func:`load_signing_key` and :func:`save_signing_key` (key files),
this module does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from consent_ledger.integrity.entry import format_timestamp, from_micros, parse_timestamp, to_micros

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_HEADER",
    "Checkpoint",
    "SignedCheckpoint",
    "TreeHead",
    "b64decode",
    "b64encode",
    "generate_signing_key",
    "key_id",
    "load_public_key",
    "load_signing_key",
    "private_key_pem",
    "public_key_pem",
    "save_signing_key",
    "sign_checkpoint",
    "verify_checkpoint",
]

CHECKPOINT_HEADER: Final = "consent-ledger checkpoint v1"
"""First line of the signed bytes; names the format and its version."""
CHECKPOINT_FORMAT: Final = "consent-ledger/checkpoint/v1"
"""Value of ``"format"`` in the JSON form."""

_HASH_SIZE: Final = 32
_SIGNATURE_SIZE: Final = 64
_MAX_SIZE: Final = 2**64 - 1


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as text."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: Any, length: int, what: str) -> bytes:
    """Decode canonical standard base64 of exactly ``length`` bytes.

    Raises ValueError naming ``what`` on a non-string, bad alphabet, bad
    padding, a non-canonical encoding or the wrong length.
    """
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{what} is not valid base64") from None
    if len(data) != length:
        raise ValueError(f"{what} must be {length} bytes, got {len(data)}")
    if b64encode(data) != text:
        raise ValueError(f"{what} is not canonical base64")
    return data


@dataclass(frozen=True, slots=True)
class TreeHead:
    """The size and root of one partition's Merkle log."""

    partition: int
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if type(self.partition) is not int or not 0 <= self.partition < 2**32:
            raise ValueError(f"partition must be an integer in 0..2**32-1, got {self.partition!r}")
        if type(self.size) is not int or not 0 <= self.size <= _MAX_SIZE:
            raise ValueError(f"tree size must be an integer in 0..2**64-1, got {self.size!r}")
        if not isinstance(self.root, bytes) or len(self.root) != _HASH_SIZE:
            raise ValueError(f"root must be {_HASH_SIZE} bytes")

    def to_json_dict(self) -> dict[str, Any]:
        """``{"partition": int, "size": int, "root": base64}``."""
        return {"partition": self.partition, "size": self.size, "root": b64encode(self.root)}

    @classmethod
    def from_json_dict(cls, data: Any) -> TreeHead:
        """Parse the JSON form strictly; ValueError names what is wrong."""
        if not isinstance(data, dict) or set(data) != {"partition", "size", "root"}:
            raise ValueError("a tree head must be an object with partition, size and root")
        for name in ("partition", "size"):
            if type(data[name]) is not int:
                raise ValueError(f"tree head {name} must be an integer")
        return cls(
            partition=data["partition"],
            size=data["size"],
            root=b64decode(data["root"], _HASH_SIZE, f"root of partition {data['partition']}"),
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a checkpoint commits to, before signing.

    ``issued_at`` is normalised to UTC at microsecond precision and
    ``tree_heads`` sorted by partition, so equal commitments compare equal and
    encode to the same bytes. Raises ValueError on a bad ``log_id``, a naive
    ``issued_at`` or a partition listed twice.
    """

    log_id: str
    issued_at: datetime
    tree_heads: tuple[TreeHead, ...]

    def __post_init__(self) -> None:
        log_id = self.log_id
        if not isinstance(log_id, str) or not log_id or not log_id.isprintable():
            raise ValueError("log_id must be a non-empty printable string")
        if log_id != log_id.strip():
            raise ValueError("log_id must not start or end with white space")
        object.__setattr__(self, "issued_at", from_micros(to_micros(self.issued_at)))
        heads = tuple(sorted(self.tree_heads, key=lambda head: head.partition))
        for before, after in pairwise(heads):
            if before.partition == after.partition:
                raise ValueError(f"partition {after.partition} appears twice in the checkpoint")
        object.__setattr__(self, "tree_heads", heads)

    def tree_head(self, partition: int) -> TreeHead | None:
        """The head of ``partition``, or None when the checkpoint does not cover it."""
        for head in self.tree_heads:
            if head.partition == partition:
                return head
        return None

    def signed_bytes(self) -> bytes:
        """The exact bytes the signature covers (format in the module docstring)."""
        lines = [CHECKPOINT_HEADER, self.log_id, format_timestamp(self.issued_at)]
        lines.extend(f"{h.partition} {h.size} {b64encode(h.root)}" for h in self.tree_heads)
        return ("\n".join(lines) + "\n").encode("utf-8")


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint with the Ed25519 signature over its signed bytes.

    Holding one proves nothing until :func:`verify_checkpoint` accepts it under
    a public key the holder trusts.
    """

    checkpoint: Checkpoint
    key_id: str
    signature: bytes

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON form (module docstring) as a dict, for embedding in proof documents."""
        cp = self.checkpoint
        return {
            "format": CHECKPOINT_FORMAT,
            "log_id": cp.log_id,
            "issued_at": format_timestamp(cp.issued_at),
            "tree_heads": [head.to_json_dict() for head in cp.tree_heads],
            "key_id": self.key_id,
            "signature": b64encode(self.signature),
        }

    def to_json(self) -> str:
        """The JSON form as compact text with sorted keys."""
        return json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json_dict(cls, data: Any) -> SignedCheckpoint:
        """Parse the JSON form strictly (exact keys and types); does not verify.

        Raises ValueError naming the first thing that is wrong.
        """
        expected = {"format", "log_id", "issued_at", "tree_heads", "key_id", "signature"}
        if not isinstance(data, dict):
            raise ValueError("a signed checkpoint must be a JSON object")
        if set(data) != expected:
            missing = sorted(expected - set(data))
            extra = sorted(set(data) - expected)
            raise ValueError(f"checkpoint fields wrong: missing {missing}, unexpected {extra}")
        if data["format"] != CHECKPOINT_FORMAT:
            raise ValueError(f"unsupported checkpoint format {data['format']!r}")
        for name in ("log_id", "issued_at", "key_id"):
            if not isinstance(data[name], str):
                raise ValueError(f"checkpoint {name} must be a string")
        if not isinstance(data["tree_heads"], list):
            raise ValueError("checkpoint tree_heads must be a list")
        try:
            issued_at = parse_timestamp(data["issued_at"])
        except ValueError as exc:
            raise ValueError(f"checkpoint issued_at: {exc}") from None
        checkpoint = Checkpoint(
            log_id=data["log_id"],
            issued_at=issued_at,
            tree_heads=tuple(TreeHead.from_json_dict(head) for head in data["tree_heads"]),
        )
        return cls(
            checkpoint=checkpoint,
            key_id=data["key_id"],
            signature=b64decode(data["signature"], _SIGNATURE_SIZE, "signature"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SignedCheckpoint:
        """Parse :meth:`to_json` output (or any JSON with the same fields)."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"signed checkpoint is not JSON: {exc}") from None
        return cls.from_json_dict(data)


def sign_checkpoint(checkpoint: Checkpoint, private_key: Ed25519PrivateKey) -> SignedCheckpoint:
    """Sign ``checkpoint.signed_bytes()`` with Ed25519; records the signer's :func:`key_id`."""
    return SignedCheckpoint(
        checkpoint=checkpoint,
        key_id=key_id(private_key),
        signature=private_key.sign(checkpoint.signed_bytes()),
    )


def verify_checkpoint(signed: SignedCheckpoint, public_key: Ed25519PublicKey) -> bool:
    """True when ``signed`` carries a valid signature by ``public_key`` over its checkpoint.

    False, never an exception, when the key id names another key or the
    signature does not match the checkpoint's signed bytes.
    """
    if signed.key_id != key_id(public_key):
        return False
    try:
        public_key.verify(signed.signature, signed.checkpoint.signed_bytes())
    except InvalidSignature:
        return False
    return True


def generate_signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key from the operating system's CSPRNG."""
    return Ed25519PrivateKey.generate()


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Hex of the first 16 bytes of SHA-256 of the raw 32-byte public key.

    Accepts the private key too (its public half is used), so signers and
    verifiers compute the same id.
    """
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:16].hex()


def _private_key_from_pem(pem: bytes, password: bytes | None) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot read the signing key PEM: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"the signing key must be Ed25519, found {type(key).__name__}")
    return key


def load_signing_key(
    path_or_pem: str | bytes | os.PathLike[str], *, password: bytes | None = None
) -> Ed25519PrivateKey:
    """Read an Ed25519 private key in PEM (PKCS#8) form.

    ``bytes``, or a ``str`` containing ``-----BEGIN``, is taken as the PEM text
    itself (e.g. from a secret in the environment); anything else is a path to
    a PEM file. Raises ValueError when the PEM is unreadable or not Ed25519,
    OSError when the file cannot be read.
    """
    if isinstance(path_or_pem, bytes):
        return _private_key_from_pem(path_or_pem, password)
    if isinstance(path_or_pem, str) and "-----BEGIN" in path_or_pem:
        return _private_key_from_pem(path_or_pem.encode("utf-8"), password)
    return _private_key_from_pem(Path(path_or_pem).read_bytes(), password)


def private_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM."""
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def save_signing_key(
    private_key: Ed25519PrivateKey,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> None:
    """Write the key as unencrypted PKCS#8 PEM to a file readable only by its owner (0600).

    Refuses (FileExistsError) to replace an existing file unless ``overwrite``;
    with ``overwrite`` the new file is written beside it and renamed over it, so
    a crash never leaves a half-written key.
    """
    target = Path(path)
    pem = private_key_pem(private_key)
    if not overwrite:
        _write_private_file(target, pem)
        return
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        _write_private_file(temporary, pem)
        temporary.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _write_private_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, 0o600)  # the umask can only narrow the mode; make it exact anyway
        file.write(data)
        file.flush()
        os.fsync(fd)


def public_key_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The public key (of a private key, its public half) as SubjectPublicKeyInfo PEM text."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """Parse a SubjectPublicKeyInfo PEM; ValueError when unreadable or not Ed25519."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot read the public key PEM: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"the public key must be Ed25519, found {type(key).__name__}")
    return key
