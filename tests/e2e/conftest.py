"""The whole service as a user runs it: `consent-ledger worker` and `consent-ledger api`
processes against the session's real broker and a fresh PostgreSQL database,
fed with `consent-ledger publish`. Each test gets its own topics, consumer group
and database, so tests never see each other's records."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from consent_ledger.devtools.broker import EmbeddedBroker
from consent_ledger.devtools.kafka_admin import ensure_topics
from consent_ledger.devtools.processes import find_free_port, stop_process_groups
from consent_ledger.integrity.checkpoints import generate_signing_key, save_signing_key

SCENARIOS = Path(__file__).resolve().parents[1] / "data" / "scenarios"
CLI = Path(sys.executable).with_name("consent-ledger")
WAIT_S = 120.0


def scenario_sources() -> list[str]:
    """Every `source` the scenarios' events name, for the token that posts them."""
    sources = set()
    for path in SCENARIOS.glob("*/events.jsonl"):
        for line in path.read_bytes().splitlines():
            try:
                source = orjson.loads(line).get("source")
            except (orjson.JSONDecodeError, AttributeError):
                continue  # the scenarios hold malformed records on purpose
            if isinstance(source, str) and source.strip():
                sources.add(source)
    return sorted(sources)


SCENARIO_SOURCES = scenario_sources()


class LedgerService:
    """Worker and API processes of one test, and what a user would do with them."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.api_url = f"http://127.0.0.1:{env['LEDGER_API_PORT']}"
        self.workers: list[subprocess.Popen[bytes]] = []
        self.api: subprocess.Popen[bytes] | None = None
        self.token = self.create_token()
        self.client = httpx.AsyncClient(
            base_url=self.api_url, timeout=10, headers={"Authorization": f"Bearer {self.token}"}
        )

    def create_token(self, name: str = "e2e", roles: str = "privacy-officer,publisher") -> str:
        """A token (by default a privacy officer's that also publishes the scenarios'
        sources), issued as an operator would: `consent-ledger token create`, the
        token its last line."""
        sources = [f"--source={source}" for source in SCENARIO_SOURCES]
        created = subprocess.run(
            [str(CLI), "token", "create", "--name", name, "--role", roles, *sources],
            env=self.env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return created.stdout.splitlines()[-1]

    def _spawn(self, command: str, log_name: str) -> subprocess.Popen[bytes]:
        with (self.folder / log_name).open("ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(
                [str(CLI), command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_worker(self) -> subprocess.Popen[bytes]:
        worker = self._spawn("worker", f"worker-{len(self.workers) + 1}.log")
        self.workers.append(worker)
        return worker

    def worker_log(self, number: int) -> str:
        return (self.folder / f"worker-{number}.log").read_text(errors="replace")

    async def start_api(self) -> None:
        self.api = self._spawn("api", "api.log")
        await self.wait_for(lambda: self._ready(), "the API to be ready")

    async def _ready(self) -> bool:
        try:
            return (await self.client.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    def publish(self, path: Path, *, raw: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(CLI), "publish", str(path)] + (["--raw"] if raw else [])
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=120, check=False
        )

    async def stats(self) -> dict[str, Any]:
        response = await self.client.get("/v1/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    async def wait_counted(self, records: int) -> dict[str, Any]:
        """Wait until /v1/stats has counted ``records`` records; return the stats."""
        latest: dict[str, Any] = {}

        async def counted() -> bool:
            nonlocal latest
            latest = await self.stats()
            return latest["accepted"] + latest["duplicates"] + latest["rejected"] >= records

        await self.wait_for(counted, f"{records} records to be counted")
        return latest

    async def wait_for(
        self, condition: Callable[[], Any], what: str, within: float = WAIT_S
    ) -> None:
        """Poll ``condition`` until it holds; fail after ``within`` seconds, with the logs."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await condition():
                return
            for process in [*self.workers, self.api]:
                if process is not None and process.poll() not in (None, -signal.SIGKILL):
                    pytest.fail(f"a process exited with {process.returncode}:\n{self.logs()}")
            await asyncio.sleep(0.2)
        pytest.fail(f"timed out waiting for {what}:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.folder.glob("*.log"))
        )

    async def pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paginated endpoint."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = dict(params, limit=1000) | ({"cursor": cursor} if cursor else {})
            response = await self.client.get(path, params=query)
            response.raise_for_status()
            body = response.json()
            items += body["items"]
            cursor = body["next_cursor"]
            if not cursor:
                return items

    async def open_violations(self) -> set[tuple[str, str]]:
        return {
            (v["event_id"], v["rule"]) for v in await self.pages("/v1/violations", status="open")
        }

    async def rejected(self) -> list[str]:
        return sorted(item["reason"] for item in await self.pages("/v1/rejected"))

    def kill_worker(self, worker: subprocess.Popen[bytes]) -> None:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    async def stop(self) -> None:
        await self.client.aclose()
        stop_process_groups(
            [process for process in [*self.workers, self.api] if process is not None], timeout=20
        )


@contextlib.asynccontextmanager
async def running_service(
    kafka_bootstrap: str, database_url: str, prefix: str, folder: Path
) -> AsyncIterator[LedgerService]:
    """An API process on topics named after ``prefix`` and the database at
    ``database_url``, its logs and keys in ``folder``; no worker yet."""
    topics = {
        "events": f"{prefix}.events",
        "rejected": f"{prefix}.rejected",
        "violations": f"{prefix}.violations",
        "checkpoints": f"{prefix}.checkpoints",
        "checkpoint_history": f"{prefix}.checkpoints.history",
    }
    await ensure_topics(
        kafka_bootstrap, {name: 4 if kind == "events" else 1 for kind, name in topics.items()}
    )
    signing_key = folder / "signing-key.pem"
    save_signing_key(generate_signing_key(), signing_key)
    env = dict(
        os.environ,
        LEDGER_KAFKA_BOOTSTRAP=kafka_bootstrap,
        LEDGER_DATABASE_URL=database_url,
        LEDGER_EVENTS_TOPIC=topics["events"],
        LEDGER_REJECTED_TOPIC=topics["rejected"],
        LEDGER_VIOLATIONS_TOPIC=topics["violations"],
        LEDGER_CHECKPOINTS_TOPIC=topics["checkpoints"],
        LEDGER_CHECKPOINT_HISTORY_TOPIC=topics["checkpoint_history"],
        LEDGER_CONSUMER_GROUP=f"{prefix}-workers",
        LEDGER_PARTITIONS="4",
        LEDGER_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(),
        LEDGER_SIGNING_KEY_FILE=str(signing_key),
        LEDGER_CHECKPOINT_INTERVAL_S="1",
        LEDGER_KAFKA_IDEMPOTENCE="false",
        LEDGER_SESSION_TIMEOUT_S="6",
        LEDGER_FETCH_MAX_WAIT_MS=str(EmbeddedBroker.FETCH_MAX_WAIT_MS),
        LEDGER_API_PORT=str(find_free_port()),
    )
    service = LedgerService(env, folder)
    await service.start_api()
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def ledger_service(
    kafka_bootstrap: str, database_url: str, unique_name: Callable[[str], str], tmp_path: Path
) -> AsyncIterator[LedgerService]:
    """API running, no worker yet (tests start as many as they need)."""
    async with running_service(
        kafka_bootstrap, database_url, unique_name("t"), tmp_path
    ) as service:
        yield service
