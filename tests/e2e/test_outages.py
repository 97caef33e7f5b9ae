"""Outages end to end (CONTRACT §2: an outage of the broker or the database is
waited out, and processing resumes where it stopped, skipping nothing).

The worker process reaches PostgreSQL, and in the other test the broker,
through a TCP proxy (tests/e2e/tcp_proxy.py) that resets every connection for
10 s in the middle of a stream; the broker advertises the proxy's address, so
every connection after bootstrapping goes through it too. Afterwards every
record is counted once, the verdicts are exactly what ``consent-ledger
check`` gives for the same events, the worker never stopped, and
``consent-ledger verify`` passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from consent_ledger.devtools.broker import EmbeddedBroker
from consent_ledger.devtools.processes import find_free_port
from consent_ledger.integrity.checkpoints import load_signing_key, public_key_pem
from tests.e2e.conftest import CLI, SCENARIOS, LedgerService
from tests.e2e.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OUTAGE_S = 10.0
EVENTS = SCENARIOS / "random-3000" / "events.jsonl"
LINES = [line for line in EVENTS.read_bytes().splitlines() if line.strip()]


@pytest.fixture
def broker_link() -> Iterator[TcpProxy]:
    """A broker of this test's own, reached only through a proxy: its bootstrap
    is the proxy, and it advertises the proxy."""
    broker_port = find_free_port()
    with (
        TcpProxy(broker_port) as proxy,
        EmbeddedBroker(port=broker_port, advertised_port=proxy.port),
    ):
        yield proxy


@pytest.fixture
def kafka_bootstrap(kafka_bootstrap: str, request: pytest.FixtureRequest) -> str:
    """In the test that asks for ``broker_link``, everything reaches the broker
    through it; the database outage test uses the session's broker (a broker of
    its own would only cost its start)."""
    if "broker_link" in request.fixturenames:
        link: TcpProxy = request.getfixturevalue("broker_link")
        return link.address
    return kafka_bootstrap


def write(path: Path, records: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(records) + b"\n")
    return path


async def publish(service: LedgerService, path: Path) -> None:
    done = await asyncio.to_thread(service.publish, path)
    assert done.returncode == 0, done.stderr


async def counted(service: LedgerService) -> int:
    stats = await service.stats()
    return int(stats["accepted"] + stats["duplicates"] + stats["rejected"])


async def hold_outage(service: LedgerService, link: TcpProxy) -> list[int]:
    """Keep ``link`` cut for OUTAGE_S seconds (the outage's length, not a wait
    for anything), checking meanwhile that no process stopped; return the
    counts seen through the API during the cut."""
    seen: list[int] = []
    link.cut()
    until = time.monotonic() + OUTAGE_S
    try:
        while time.monotonic() < until:
            for worker in service.workers:
                assert worker.poll() is None, f"the worker stopped:\n{service.logs()}"
            seen.append(await counted(service))
            await asyncio.sleep(0.5)
    finally:
        link.restore()
    return seen


async def assert_as_check(service: LedgerService, stream: Path, stats: dict[str, Any]) -> None:
    """Counts and open violations are exactly what `check` gives for ``stream``."""
    run = await asyncio.to_thread(
        subprocess.run, [str(CLI), "check", str(stream), "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode in (0, 1), run.stderr
    want = json.loads(run.stdout)
    assert (stats["accepted"], stats["duplicates"], stats["rejected"]) == (
        want["counts"]["accepted"], want["counts"]["duplicates"], want["counts"]["rejected"],
    )  # fmt: skip
    assert await service.open_violations() == {
        (v["event_id"], v["rule"]) for v in want["violations"]
    }


async def assert_verified(service: LedgerService, database_url: str, accepted: int) -> None:
    """Once a checkpoint covers every entry, `verify` passes with nothing unsigned."""

    async def signed_all() -> bool:
        response = await service.client.get("/v1/ledger/checkpoints/latest")
        if response.status_code != 200:
            return False
        heads = response.json()["checkpoint"]["tree_heads"]
        return sum(head["size"] for head in heads) == accepted

    await service.wait_for(signed_all, "a checkpoint of every entry")
    public = service.folder / "ledger.pub"
    public.write_text(public_key_pem(load_signing_key(service.folder / "signing-key.pem")))
    env = dict(service.env, LEDGER_DATABASE_URL=database_url)
    run = await asyncio.to_thread(
        subprocess.run, [str(CLI), "verify", "--public-key", str(public)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


@contextlib.contextmanager
def database_link(database_url: str, folder: Path) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy in front of the database server, and the database's URL through it.

    A server on a Unix socket (the embedded one: ``?host=/folder``) is reached
    through a socket of the proxy's in ``folder``; one on a TCP port, through
    the proxy's port."""
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query))
    socket_folder = query.get("host") or (parts.hostname or "").startswith("/")
    if socket_folder:
        port = query.get("port") or str(parts.port or 5432)
        server = Path(query.get("host") or str(parts.hostname)) / f".s.PGSQL.{port}"
        with TcpProxy(server, unix_socket=folder / f".s.PGSQL.{port}") as link:
            query["host"] = str(folder)
            yield link, urlunsplit(parts._replace(query=urlencode(query)))
        return
    assert parts.port is not None
    with TcpProxy(parts.port) as link:
        credentials, _, _ = parts.netloc.rpartition("@")
        netloc = f"{credentials}@{link.address}" if credentials else link.address
        yield link, urlunsplit(parts._replace(netloc=netloc))


async def test_a_database_outage_mid_stream_loses_nothing(
    ledger_service: LedgerService, database_url: str, tmp_path: Path
) -> None:
    service = ledger_service
    first, second = LINES[:1500], LINES[1500:]
    with (
        tempfile.TemporaryDirectory(
            prefix="ledger-link-"
        ) as sockets,  # short: a socket path is bounded
        database_link(database_url, Path(sockets)) as (link, proxied_url),
    ):
        service.env["LEDGER_DATABASE_URL"] = proxied_url  # the worker's only
        service.env["LEDGER_BATCH_SIZE"] = "50"
        service.start_worker()
        await publish(service, write(tmp_path / "first.jsonl", first))
        await service.wait_for(lambda: _at_least(service, len(first)), "the first half")

        link.cut()  # published while the worker cannot reach its database
        await publish(service, write(tmp_path / "second.jsonl", second))
        seen = await hold_outage(service, link)
        stats = await service.wait_counted(len(LINES))

        assert set(seen) == {len(first)}, "something was committed without the database"
        assert "batch failed, retrying" in service.worker_log(1)
        await assert_as_check(service, EVENTS, stats)
        await assert_verified(service, database_url, stats["accepted"])  # the worker signs


async def test_a_broker_outage_mid_stream_loses_nothing(
    ledger_service: LedgerService, broker_link: TcpProxy, database_url: str, tmp_path: Path
) -> None:
    service = ledger_service
    service.env["LEDGER_BATCH_SIZE"] = "10"  # many transactions: the cut lands mid-stream
    service.start_worker()
    await publish(service, EVENTS)
    at_cut = 0

    async def under_way() -> bool:
        nonlocal at_cut
        at_cut = await counted(service)
        return at_cut > 0

    await service.wait_for(under_way, "a first batch")
    await hold_outage(service, broker_link)
    await publish(service, EVENTS)  # the stream goes on: every record again, a redelivery
    stats = await service.wait_counted(2 * len(LINES))

    assert at_cut < len(LINES), "the cut came after the stream"
    await assert_as_check(service, write(tmp_path / "twice.jsonl", LINES + LINES), stats)
    await assert_verified(service, database_url, stats["accepted"])


async def _at_least(service: LedgerService, records: int) -> bool:
    return await counted(service) >= records
