"""How a worker process sets up faust: what it asks of the broker and what it logs."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import pytest

from consent_ledger.core.policy import load_reference_policy
from consent_ledger.settings import Settings
from consent_ledger.worker.app import WorkerNotReady, check_ready, make_worker

pytestmark = pytest.mark.unit

SETTINGS = Settings(kafka_bootstrap="127.0.0.1:1", database_url="postgresql://nowhere/ledger")


@pytest.fixture
def restored_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


@pytest.mark.usefixtures("restored_root_logger")
def test_the_worker_leaves_the_libraries_debug_logging_off() -> None:
    """faust's start-up spinner would set the root logger to DEBUG for the
    worker's whole life, and aiokafka would build a record per debug call."""
    worker = make_worker(SETTINGS, load_reference_policy(), loglevel="warning")
    worker._setup_logging()  # the first thing faust's worker does when it starts

    assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("aiokafka.conn").isEnabledFor(logging.INFO)
    assert logging.getLogger("aiokafka").isEnabledFor(logging.WARNING)


def test_the_broker_may_hold_a_fetch_as_long_as_configured() -> None:
    default = make_worker(SETTINGS, load_reference_policy())
    short = make_worker(SETTINGS.with_(fetch_max_wait_ms=50), load_reference_policy())

    assert default.app.transport.Consumer.fetch_max_wait_ms == 500
    assert short.app.transport.Consumer.fetch_max_wait_ms == 50


@pytest.mark.parametrize(
    "witnesses", ["witness.example/checkpoints", "ftp://witness.example/x", "http://"]
)
def test_a_witness_that_is_no_http_url_keeps_the_worker_out_of_its_group(witnesses: str) -> None:
    settings = SETTINGS.with_(master_key=base64.b64encode(bytes(32)).decode(),
                              witnesses=f"https://good.example/w, {witnesses}")  # fmt: skip
    with pytest.raises(WorkerNotReady, match=r"LEDGER_WITNESSES: .* is not an http"):
        check_ready(settings)  # before it would reach for the (absent) database


def test_witness_urls_are_split_at_commas() -> None:
    assert Settings(witnesses=" http://a/x ,, https://b/y,").witness_urls == (
        "http://a/x",
        "https://b/y",
    )
    assert Settings().witness_urls == ()
