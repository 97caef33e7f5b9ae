"""The worker's raw schema hands faust records over exactly as they arrived, and
the faust code that lean_faust copies is the one it was copied from."""

from __future__ import annotations

import hashlib
import inspect
from importlib.metadata import version
from typing import Any

import faust
import pytest
from faust.types.tuples import Message

from consent_ledger.worker.lean_faust import LeanConsumer, RawRecords

pytestmark = pytest.mark.unit


async def test_raw_records_keep_key_value_and_headers_as_they_are() -> None:
    app = faust.App("lean-faust-test", broker="kafka://127.0.0.1:1", store="memory://",
                    autodiscover=False, web_enabled=False)  # fmt: skip
    decode = RawRecords().compile(app)
    value = b'{"not": "valid json'  # the ledger rejects and keeps it; faust must not drop it
    message = Message(
        "ledger.events", 2, 41, 0.0, 0, [("ce_id", b"e-1")], b"subject-1", value, None
    )
    event = await decode(message)
    assert (event.key, event.value, event.message.offset) == (b"subject-1", value, 41)
    assert event.headers == {"ce_id": b"e-1"}  # as faust.Event gives them


# The upstream method that LeanConsumer._drain_messages replaces, fingerprinted
# at the pinned versions (pyproject.toml). When an upgrade changes it, this test
# fails: compare the new upstream loop with LeanConsumer._drain_messages, carry
# the change over, then record the new fingerprint and versions here.
UPSTREAM_DRAIN_MESSAGES_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"
PINNED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


def _upstream_drain_messages() -> Any:
    """The ``_drain_messages`` that LeanConsumer would inherit without its own."""
    for base in LeanConsumer.__mro__[1:]:
        if "_drain_messages" in vars(base):
            return vars(base)["_drain_messages"]
    raise AssertionError("no upstream _drain_messages: faust changed its consumer")


def test_the_pinned_faust_and_aiokafka_are_installed() -> None:
    installed = {name: version(name) for name in PINNED}
    assert installed == PINNED, (
        "faust-streaming or aiokafka is not the version worker/lean_faust.py was "
        "written against; install the lock file (make install), or review the copy"
    )


def test_the_upstream_fetch_loop_that_lean_faust_replaces_is_unchanged() -> None:
    upstream = _upstream_drain_messages()
    assert f"{upstream.__module__}.{upstream.__qualname__}" == (
        "faust.transport.consumer.Consumer._drain_messages"
    )
    fingerprint = hashlib.sha256(inspect.getsource(upstream).encode()).hexdigest()
    assert fingerprint == UPSTREAM_DRAIN_MESSAGES_SHA256, (
        "faust's Consumer._drain_messages changed: LeanConsumer._drain_messages is "
        "a modified copy of it; review the difference, then record the new fingerprint"
    )
