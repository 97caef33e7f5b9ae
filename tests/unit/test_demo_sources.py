"""The demo's publisher token lists every `source` the demo publishes with:
otherwise `make run` would show 403s instead of a ledger filling up."""

from __future__ import annotations

import pytest

from consent_ledger.devtools.demo import EventFactory
from consent_ledger.devtools.tokens import DEMO_SOURCES

pytestmark = pytest.mark.unit


def test_every_demo_source_is_on_the_demo_token() -> None:
    factory = EventFactory(seed=7, subjects=200, live=False)
    sources = {factory.next_event()["source"] for _ in range(20_000)}
    assert sources == set(DEMO_SOURCES)
