"""`keys rotate-master` names the retired master keys in the right number."""

import pytest

from consent_ledger.key_commands import retired_keys_line

pytestmark = pytest.mark.unit


def test_one_retired_key_is_it() -> None:
    line = retired_keys_line(["9b8d"])
    assert line.startswith("retired 9b8d: remove it from the master key file")
    assert line.endswith("\n")


def test_several_retired_keys_are_them() -> None:
    line = retired_keys_line(["9b8d", "17aa"])
    assert line.startswith("retired 9b8d, 17aa: remove them from the master key file")
