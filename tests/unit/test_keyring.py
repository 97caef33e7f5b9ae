"""Several master keys (CONTRACT §7 "Keys rotate"): the newest wraps, each
wrapped key names its master key, version 1 keys still open, a changed key
file is taken up, and a key not held is named."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from consent_ledger.integrity.keyring import (
    KeyRing,
    MasterKeyError,
    MasterKeyUnavailable,
    add_master_key,
    decode_master_keys,
    load_keyring,
    master_key_id,
    wrapped_by,
)
from consent_ledger.integrity.shredding import KeyUnwrapError, KeyWrapper

pytestmark = pytest.mark.unit

OLD, NEW = os.urandom(32), os.urandom(32)


def line(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_the_newest_key_wraps_and_every_key_held_unwraps_what_it_wrapped() -> None:
    old_ring, both = KeyRing(OLD), KeyRing([OLD, NEW])
    key, wrapped_old = old_ring.new_key("anna")
    assert wrapped_by(wrapped_old) == master_key_id(OLD)
    assert both.unwrap("anna", wrapped_old) == key
    rewrapped = both.rewrap("anna", wrapped_old)
    assert wrapped_by(rewrapped) == master_key_id(NEW) and both.is_newest(rewrapped)
    assert KeyRing(NEW).unwrap("anna", rewrapped) == key
    assert both.rewrap("anna", rewrapped) is rewrapped
    with pytest.raises(KeyUnwrapError):
        both.unwrap("bo", rewrapped)  # bound to its subject


def test_a_version_1_key_names_no_master_key_and_opens_with_whichever_wrapped_it() -> None:
    key = os.urandom(32)
    legacy = KeyWrapper(OLD).wrap("anna", key)
    assert wrapped_by(legacy) is None
    assert KeyRing([OLD, NEW]).unwrap("anna", legacy) == key
    assert wrapped_by(KeyRing([OLD, NEW]).rewrap("anna", legacy)) == master_key_id(NEW)
    with pytest.raises(KeyUnwrapError):
        KeyRing(NEW).unwrap("anna", legacy)


def test_a_key_not_held_is_named_and_a_changed_file_is_taken_up(tmp_path: Path) -> None:
    path = tmp_path / "master-keys"
    path.write_text(f"# the ledger's master keys, newest last\n{line(OLD)}\n")
    keyring = load_keyring(path, None)
    assert not keyring.refresh()
    _, wrapped_new = KeyRing(NEW).new_key("anna")
    with pytest.raises(MasterKeyUnavailable, match=master_key_id(NEW).hex()):
        keyring.unwrap("anna", wrapped_new)

    path.write_text(f"{line(OLD)}\n\n{line(NEW)}\n")
    assert keyring.unwrap("anna", wrapped_new)  # re-read on the unknown id
    path.write_text(f"{line(OLD)}\n")
    assert keyring.refresh() and keyring.newest_id == master_key_id(OLD)


def test_add_master_key_appends_a_newest_key_and_keeps_the_file_private(tmp_path: Path) -> None:
    path = tmp_path / "master-keys"
    path.write_text(line(OLD) + "\n")
    path.chmod(0o600)
    added = add_master_key(path)
    keys = decode_master_keys(path.read_text(), str(path))
    assert keys[0] == OLD and master_key_id(keys[1]) == added
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keyring(path, None).newest_id == added


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no master key"),
        ("# only a comment\n", "holds no master key"),
        (f"{line(OLD)}\nnot-base64!\n", "key 2: not base64"),
        (f"{line(OLD)[:-4]}\n", "key 1: must decode to 32 bytes"),
    ],
)
def test_a_broken_key_file_names_the_key(text: str, message: str) -> None:
    with pytest.raises(MasterKeyError, match=message):
        decode_master_keys(text, "keys.txt")


def test_the_environment_value_may_hold_several_keys() -> None:
    keyring = load_keyring(None, f"{line(OLD)}, {line(NEW)}")
    assert keyring.key_ids == [master_key_id(OLD), master_key_id(NEW)]
