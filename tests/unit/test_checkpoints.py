"""Signed checkpoints: canonical bytes, Ed25519 signing, JSON, key handling."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent_ledger.integrity.checkpoints import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    SignedCheckpoint,
    TreeHead,
    generate_signing_key,
    key_id,
    load_public_key,
    load_signing_key,
    public_key_pem,
    save_signing_key,
    sign_checkpoint,
    verify_checkpoint,
)

pytestmark = pytest.mark.unit

ROOT_A = hashlib.sha256(b"a").digest()
ROOT_B = hashlib.sha256(b"b").digest()
ISSUED = datetime(2026, 3, 1, 8, 0, 0, 250000, tzinfo=UTC)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return generate_signing_key()


@pytest.fixture
def checkpoint() -> Checkpoint:
    return Checkpoint(
        log_id="consent-ledger/test",
        issued_at=ISSUED,
        tree_heads=(TreeHead(1, 5, ROOT_B), TreeHead(0, 12, ROOT_A)),
    )


def test_signed_bytes_are_the_documented_text(checkpoint: Checkpoint) -> None:
    assert checkpoint.signed_bytes() == (
        b"consent-ledger checkpoint v1\n"
        b"consent-ledger/test\n"
        b"2026-03-01T08:00:00.250000Z\n"
        b"0 12 ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs=\n"
        b"1 5 PiPoFgA5WUoziU9lZOGxNIu9egCI1CxKy3PurtWcAJ0=\n"
    )


def test_checkpoint_is_normalised(checkpoint: Checkpoint) -> None:
    assert [h.partition for h in checkpoint.tree_heads] == [0, 1]
    oslo = timezone(timedelta(hours=1))
    same = Checkpoint("consent-ledger/test", ISSUED.astimezone(oslo), checkpoint.tree_heads)
    assert same == checkpoint
    assert same.issued_at.tzinfo == UTC
    assert same.signed_bytes() == checkpoint.signed_bytes()
    assert checkpoint.tree_head(1) == TreeHead(1, 5, ROOT_B)
    assert checkpoint.tree_head(7) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"log_id": ""},
        {"log_id": "two\nlines"},
        {"log_id": " padded"},
        {"issued_at": datetime(2026, 3, 1)},  # naive on purpose
        {"tree_heads": (TreeHead(0, 1, ROOT_A), TreeHead(0, 2, ROOT_B))},
    ],
)
def test_invalid_checkpoints_are_refused(kwargs: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "log_id": "log",
        "issued_at": ISSUED,
        "tree_heads": (TreeHead(0, 1, ROOT_A),),
    }
    fields.update(kwargs)
    with pytest.raises(ValueError):
        Checkpoint(**fields)


@pytest.mark.parametrize(
    ("partition", "size", "root"),
    [(-1, 0, ROOT_A), (0, -1, ROOT_A), (0, 1, ROOT_A[:31]), (True, 1, ROOT_A)],
)
def test_invalid_tree_heads_are_refused(partition: int, size: int, root: bytes) -> None:
    with pytest.raises(ValueError):
        TreeHead(partition, size, root)


def test_sign_and_verify(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> None:
    signed = sign_checkpoint(checkpoint, key)
    assert signed.key_id == key_id(key.public_key())
    assert len(signed.signature) == 64
    assert verify_checkpoint(signed, key.public_key())


def _altered(checkpoint: Checkpoint, what: str) -> Checkpoint:
    heads = list(checkpoint.tree_heads)
    if what == "size":
        heads[0] = dataclasses.replace(heads[0], size=heads[0].size + 1)
    elif what == "root":
        heads[1] = dataclasses.replace(heads[1], root=ROOT_A)
    elif what == "partition":
        heads[1] = dataclasses.replace(heads[1], partition=2)
    elif what == "dropped head":
        heads.pop()
    elif what == "extra head":
        heads.append(TreeHead(9, 0, hashlib.sha256(b"").digest()))
    elif what == "time":
        return dataclasses.replace(
            checkpoint, issued_at=checkpoint.issued_at + timedelta(microseconds=1)
        )
    elif what == "log id":
        return dataclasses.replace(checkpoint, log_id="consent-ledger/other")
    return dataclasses.replace(checkpoint, tree_heads=tuple(heads))


@pytest.mark.parametrize(
    "what", ["size", "root", "partition", "dropped head", "extra head", "time", "log id"]
)
def test_altered_checkpoint_fails(
    checkpoint: Checkpoint, key: Ed25519PrivateKey, what: str
) -> None:
    signed = sign_checkpoint(checkpoint, key)
    forged = dataclasses.replace(signed, checkpoint=_altered(checkpoint, what))
    assert forged.checkpoint != checkpoint
    assert not verify_checkpoint(forged, key.public_key())


@pytest.mark.parametrize("byte", [0, 31, 32, 63])
def test_altered_signature_fails(checkpoint: Checkpoint, key: Ed25519PrivateKey, byte: int) -> None:
    signed = sign_checkpoint(checkpoint, key)
    sig = bytearray(signed.signature)
    sig[byte] ^= 0x80
    assert not verify_checkpoint(
        dataclasses.replace(signed, signature=bytes(sig)), key.public_key()
    )


def test_signature_by_another_key_fails(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> None:
    intruder = generate_signing_key()
    forged = sign_checkpoint(checkpoint, intruder)
    assert not verify_checkpoint(forged, key.public_key())
    # Claiming the right key id does not help either.
    relabelled = dataclasses.replace(forged, key_id=key_id(key))
    assert not verify_checkpoint(relabelled, key.public_key())


def test_json_round_trip(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> None:
    signed = sign_checkpoint(checkpoint, key)
    text = signed.to_json()
    data = json.loads(text)
    assert data["format"] == CHECKPOINT_FORMAT
    assert data["issued_at"] == "2026-03-01T08:00:00.250000Z"
    assert data["tree_heads"][0] == {
        "partition": 0,
        "size": 12,
        "root": "ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs=",
    }
    parsed = SignedCheckpoint.from_json(text)
    assert parsed == signed
    assert verify_checkpoint(parsed, key.public_key())
    # Key order and white space in the carrier do not matter.
    assert SignedCheckpoint.from_json(json.dumps(data, indent=2)) == signed


def test_altered_json_fails_verification(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> None:
    data = sign_checkpoint(checkpoint, key).to_json_dict()
    data["tree_heads"][1]["size"] = 6
    assert not verify_checkpoint(SignedCheckpoint.from_json_dict(data), key.public_key())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format", "consent-ledger/checkpoint/v2"),
        ("signature", "AAAA"),
        ("signature", "not base64!"),
        ("issued_at", "2026-03-01T08:00:00"),
        ("issued_at", "2026-03-01 08:00:00Z"),
        ("tree_heads", [{"partition": 0, "size": "12", "root": "x"}]),
        ("tree_heads", [{"partition": 0, "size": 1, "root": "AAAA"}]),
        ("tree_heads", {}),
        ("log_id", 5),
    ],
)
def test_malformed_json_is_refused(
    checkpoint: Checkpoint, key: Ed25519PrivateKey, field: str, value: object
) -> None:
    data = sign_checkpoint(checkpoint, key).to_json_dict()
    data[field] = value
    with pytest.raises(ValueError):
        SignedCheckpoint.from_json_dict(data)


def test_non_canonical_base64_is_refused(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> None:
    data = sign_checkpoint(checkpoint, key).to_json_dict()
    root = data["tree_heads"][0]["root"]
    data["tree_heads"][0]["root"] = root.rstrip("=")
    with pytest.raises(ValueError):
        SignedCheckpoint.from_json_dict(data)


def test_missing_or_extra_fields_are_refused(
    checkpoint: Checkpoint, key: Ed25519PrivateKey
) -> None:
    data = sign_checkpoint(checkpoint, key).to_json_dict()
    with pytest.raises(ValueError):
        SignedCheckpoint.from_json_dict({k: v for k, v in data.items() if k != "key_id"})
    with pytest.raises(ValueError):
        SignedCheckpoint.from_json_dict({**data, "note": "trust me"})
    with pytest.raises(ValueError):
        SignedCheckpoint.from_json("[1, 2")


def test_key_file_round_trip(tmp_path: Path, checkpoint: Checkpoint) -> None:
    key = generate_signing_key()
    path = tmp_path / "signing.pem"
    save_signing_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_signing_key(path)
    assert key_id(loaded) == key_id(key)
    assert verify_checkpoint(sign_checkpoint(checkpoint, loaded), key.public_key())
    assert key_id(load_signing_key(str(path))) == key_id(key)
    assert key_id(load_signing_key(path.read_bytes())) == key_id(key)
    assert key_id(load_signing_key(path.read_text())) == key_id(key)


def test_saving_never_clobbers_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    first, second = generate_signing_key(), generate_signing_key()
    save_signing_key(first, path)
    with pytest.raises(FileExistsError):
        save_signing_key(second, path)
    assert key_id(load_signing_key(path)) == key_id(first)
    save_signing_key(second, path, overwrite=True)
    assert key_id(load_signing_key(path)) == key_id(second)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing.pem"]


def test_public_key_pem_round_trip(key: Ed25519PrivateKey) -> None:
    pem = public_key_pem(key)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert public_key_pem(key.public_key()) == pem
    public = load_public_key(pem)
    assert key_id(public) == key_id(key)
    assert key_id(load_public_key(pem.encode())) == key_id(key)


def test_key_id_is_truncated_sha256_of_raw_public_key(key: Ed25519PrivateKey) -> None:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(key.public_key()) == hashlib.sha256(raw).hexdigest()[:32]


def test_non_ed25519_keys_are_refused() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    private_pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="Ed25519"):
        load_signing_key(private_pem)
    with pytest.raises(ValueError, match="Ed25519"):
        load_public_key(public_pem)
    with pytest.raises(ValueError):
        load_public_key("-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----\n")
