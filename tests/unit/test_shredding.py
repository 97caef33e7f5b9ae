"""Crypto-shredding: sealing payloads per subject and event, wrapping subject keys."""

from __future__ import annotations

import os

import pytest

from consent_ledger.integrity.shredding import (
    KEY_SIZE,
    KeyUnwrapError,
    PayloadUnreadable,
    SubjectSealer,
    new_subject_key,
    open_sealed,
    seal,
    unwrap_key,
    wrap_key,
)

pytestmark = pytest.mark.unit

SUBJECT = "subj-7f3a"
EVENT = "evt-0001"
PAYLOAD = b'{"purpose":"marketing","recipient":{"kind":"partner","id":"acme"}}'


@pytest.fixture
def key() -> bytes:
    return new_subject_key()


def test_round_trip(key: bytes) -> None:
    sealed = seal(key, SUBJECT, EVENT, PAYLOAD)
    assert open_sealed(key, SUBJECT, EVENT, sealed) == PAYLOAD


def test_sealed_layout_and_fresh_nonces(key: bytes) -> None:
    first = seal(key, SUBJECT, EVENT, PAYLOAD)
    second = seal(key, SUBJECT, EVENT, PAYLOAD)
    assert first[0] == 1
    assert len(first) == 1 + 12 + len(PAYLOAD) + 16
    assert first[1:13] != second[1:13]
    assert first != second
    assert PAYLOAD not in first


def test_a_subject_sealer_seals_like_seal(key: bytes) -> None:
    sealer = SubjectSealer(key, SUBJECT)
    sealed = [sealer.seal(f"evt-{n}", PAYLOAD) for n in range(3000)]  # past a nonce draw
    for n, payload in enumerate(sealed):
        assert open_sealed(key, SUBJECT, f"evt-{n}", payload) == PAYLOAD
    assert len({payload[1:13] for payload in sealed}) == len(sealed)  # every nonce fresh
    with pytest.raises(PayloadUnreadable):
        open_sealed(key, "another-subject", "evt-0", sealed[0])
    with pytest.raises(ValueError, match="32 bytes"):
        SubjectSealer(b"short", SUBJECT)


def test_a_forked_child_draws_its_own_nonces(key: bytes) -> None:
    seal(key, SUBJECT, EVENT, PAYLOAD)  # the pool now holds nonces
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(writer, seal(key, SUBJECT, EVENT, PAYLOAD)[1:13])
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(reader, 12)
    assert from_child != seal(key, SUBJECT, EVENT, PAYLOAD)[1:13]


def test_empty_and_non_ascii_payloads(key: bytes) -> None:
    for plaintext in (b"", "Ærlig talt, Øystein".encode()):
        subject = "søker-ø"
        assert open_sealed(key, subject, EVENT, seal(key, subject, EVENT, plaintext)) == plaintext


def test_new_subject_keys_are_random_aes256_keys() -> None:
    keys = {new_subject_key() for _ in range(16)}
    assert len(keys) == 16
    assert all(len(k) == KEY_SIZE for k in keys)


def test_wrong_key_is_unreadable(key: bytes) -> None:
    sealed = seal(key, SUBJECT, EVENT, PAYLOAD)
    with pytest.raises(PayloadUnreadable):
        open_sealed(new_subject_key(), SUBJECT, EVENT, sealed)


def test_wrong_subject_is_unreadable(key: bytes) -> None:
    sealed = seal(key, SUBJECT, EVENT, PAYLOAD)
    with pytest.raises(PayloadUnreadable):
        open_sealed(key, "subj-other", EVENT, sealed)


def test_wrong_event_id_is_unreadable(key: bytes) -> None:
    sealed = seal(key, SUBJECT, EVENT, PAYLOAD)
    with pytest.raises(PayloadUnreadable):
        open_sealed(key, SUBJECT, "evt-0002", sealed)


def test_subject_and_event_boundaries_cannot_shift(key: bytes) -> None:
    sealed = seal(key, "ab", "c", PAYLOAD)
    with pytest.raises(PayloadUnreadable):
        open_sealed(key, "a", "bc", sealed)


def test_every_flipped_byte_is_unreadable(key: bytes) -> None:
    sealed = seal(key, SUBJECT, EVENT, PAYLOAD)
    for position in range(len(sealed)):
        altered = bytearray(sealed)
        altered[position] ^= 0x01
        with pytest.raises(PayloadUnreadable):
            open_sealed(key, SUBJECT, EVENT, bytes(altered))


@pytest.mark.parametrize("length", [0, 1, 13, 28])
def test_truncated_is_unreadable(key: bytes, length: int) -> None:
    sealed = seal(key, SUBJECT, EVENT, b"")
    assert len(sealed) == 29
    with pytest.raises(PayloadUnreadable):
        open_sealed(key, SUBJECT, EVENT, sealed[:length])


def test_bad_key_length_is_a_programming_error(key: bytes) -> None:
    with pytest.raises(ValueError):
        seal(key[:16], SUBJECT, EVENT, PAYLOAD)
    with pytest.raises(ValueError):
        open_sealed(key[:16], SUBJECT, EVENT, seal(key, SUBJECT, EVENT, PAYLOAD))


def test_error_names_no_personal_data(key: bytes) -> None:
    sealed = seal(key, SUBJECT, EVENT, PAYLOAD)
    with pytest.raises(PayloadUnreadable) as caught:
        open_sealed(new_subject_key(), SUBJECT, EVENT, sealed)
    assert SUBJECT not in str(caught.value)


def test_wrap_round_trip(key: bytes) -> None:
    kek = new_subject_key()
    wrapped = wrap_key(kek, SUBJECT, key)
    assert key not in wrapped
    assert len(wrapped) == 1 + 12 + 32 + 16
    assert unwrap_key(kek, SUBJECT, wrapped) == key


def test_wrapped_key_needs_the_right_kek_and_subject(key: bytes) -> None:
    kek = new_subject_key()
    wrapped = wrap_key(kek, SUBJECT, key)
    with pytest.raises(KeyUnwrapError):
        unwrap_key(new_subject_key(), SUBJECT, wrapped)
    with pytest.raises(KeyUnwrapError):
        unwrap_key(kek, "subj-other", wrapped)
    altered = bytearray(wrapped)
    altered[-1] ^= 0x01
    with pytest.raises(KeyUnwrapError):
        unwrap_key(kek, SUBJECT, bytes(altered))


def test_a_sealed_payload_is_not_a_wrapped_key(key: bytes) -> None:
    # Same key, same subject string: the contexts differ, so neither opens as the other.
    sealed = seal(key, SUBJECT, "", new_subject_key())
    with pytest.raises(KeyUnwrapError):
        unwrap_key(key, SUBJECT, sealed)


def test_wrap_refuses_bad_key_lengths(key: bytes) -> None:
    with pytest.raises(ValueError):
        wrap_key(b"short", SUBJECT, key)
    with pytest.raises(ValueError):
        wrap_key(new_subject_key(), SUBJECT, b"short")
