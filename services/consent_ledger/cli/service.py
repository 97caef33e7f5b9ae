"""The commands that run the service or prepare its database: ``dev`` (all of
it on one machine), ``worker``, ``api``, ``migrate``. Each is a composition
root: settings first (a configuration error is one line, before any logging),
then logging, then the process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from consent_ledger.cli.command import (
    EXIT_OK,
    TRANSPORT,
    Commands,
    UsageError,
    add_command,
    configure_logging,
    settings_from_env,
)
from consent_ledger.core.policy import load_policy_versions


def add_dev(commands: Commands) -> None:
    dev = add_command(
        commands, "dev",
        "the whole service on this machine (embedded broker and PostgreSQL by default)",
        "Run the whole service on this machine: an embedded broker and PostgreSQL (unless "
        "the environment names real ones; they need the extra consent-ledger[embedded]), "
        "the stream worker(s), the API, and with --demo a demo producer. Keys and the "
        "database are kept in the data folder between runs; Ctrl-C stops everything.",
        "LEDGER_KAFKA_BOOTSTRAP, LEDGER_DATABASE_URL (use these instead of the embedded "
        "ones), LEDGER_DATA_DIR, LEDGER_API_HOST, LEDGER_API_PORT, LEDGER_PARTITIONS, "
        "LEDGER_POLICY, LEDGER_MASTER_KEY_FILE, LEDGER_SIGNING_KEY_FILE, "
        "LEDGER_SESSION_TIMEOUT_S, LEDGER_FETCH_MAX_WAIT_MS; the worker and the API it "
        "starts read the rest (see their --help)",
        "exit status: 0 stopped by Ctrl-C, 1 a process or the infrastructure failed, "
        "2 usage or configuration error",
    )  # fmt: skip
    dev.add_argument("--demo", action="store_true", help="also publish a slowly paced demo stream")
    dev.add_argument(
        "--data-dir", type=Path, help="where to keep the database and keys (default .ledger-data)"
    )
    dev.add_argument("--workers", type=int, default=1, help="stream workers to run (default 1)")
    dev.add_argument("--partitions", type=int, help="partitions of ledger.events (default 4)")
    dev.set_defaults(run=_dev)


def add_worker(commands: Commands) -> None:
    worker = add_command(
        commands, "worker", "run a stream worker (one of a consumer group)",
        "Run a stream worker: read ledger.events in batches, judge, write each batch in one "
        "PostgreSQL transaction, relay alerts, sign checkpoints. Run as many as the topic "
        "has partitions, in one consumer group; SIGTERM stops it cleanly.",
        "LEDGER_KAFKA_BOOTSTRAP and LEDGER_DATABASE_URL (required), LEDGER_MASTER_KEY_FILE "
        "or LEDGER_MASTER_KEY (required), LEDGER_SIGNING_KEY_FILE, LEDGER_POLICY, "
        "LEDGER_EVENTS_TOPIC, LEDGER_REJECTED_TOPIC, LEDGER_VIOLATIONS_TOPIC, "
        "LEDGER_PARTITIONS, LEDGER_CONSUMER_GROUP, LEDGER_BATCH_SIZE, "
        "LEDGER_CHECKPOINT_INTERVAL_S, LEDGER_LOG_ID, LEDGER_KAFKA_IDEMPOTENCE, "
        "LEDGER_SESSION_TIMEOUT_S, LEDGER_FETCH_MAX_WAIT_MS, LEDGER_INTEGRITY, "
        "LEDGER_WITNESSES, LEDGER_WEBHOOKS (a file of alert webhooks), "
        "LEDGER_WEBHOOK_TIMEOUT_S, LEDGER_WEBHOOK_RETRY_HORIZON_S, " + TRANSPORT,
        "exit status: 0 stopped by a signal, 2 usage or configuration error or the "
        "database unusable at start, other non-zero: it crashed (restart it: it resumes "
        "where the database says it stopped)",
    )  # fmt: skip
    worker.set_defaults(run=_worker)


def add_api(commands: Commands) -> None:
    api = add_command(
        commands, "api", "run the HTTP API",
        "Run the HTTP API (docs at /docs once it runs). Stateless: run as many as you like.",
        "LEDGER_DATABASE_URL (required), LEDGER_KAFKA_BOOTSTRAP (publishing, readiness, "
        "lag), LEDGER_API_HOST, LEDGER_API_PORT, LEDGER_MASTER_KEY_FILE or "
        "LEDGER_MASTER_KEY (required), LEDGER_PUBLIC_KEY_FILE or LEDGER_SIGNING_KEY_FILE, "
        "LEDGER_POLICY, LEDGER_EVENTS_TOPIC, LEDGER_KAFKA_IDEMPOTENCE, "
        "LEDGER_MAX_REQUEST_BYTES, LEDGER_CHECKPOINT_INTERVAL_S, LEDGER_LOG_ID, " + TRANSPORT,
        "exit status: 0 stopped by a signal, 2 usage or configuration error",
    )  # fmt: skip
    api.set_defaults(run=_api)


def add_migrate(commands: Commands) -> None:
    migrate = add_command(
        commands, "migrate", "apply the database migrations (run as the owner role in production)",
        "Apply the database schema's migrations that are not applied yet (every process "
        "also does at start; in production run this as the owner role).",
        "LEDGER_DATABASE_URL (required)",
        "exit status: 0 applied or up to date, 2 usage error or the database unreachable",
    )  # fmt: skip
    migrate.set_defaults(run=_migrate)


def _dev(args: argparse.Namespace) -> int:
    from consent_ledger.devtools.dev import DevStack, missing_embedded

    settings = settings_from_env()
    if settings.webhooks is not None:  # a bad webhooks file is one line; workers get its path
        settings = settings.with_(webhooks=_checked_webhooks(settings.webhooks))
    configure_logging()
    if args.data_dir is not None:
        settings = settings.with_(data_dir=args.data_dir)
    if args.partitions is not None:
        settings = settings.with_(partitions=args.partitions)
    missing = missing_embedded(settings)
    if missing is not None:
        raise UsageError(missing)
    load_policy_versions(settings.policy_path)  # refuse a bad policy before starting anything
    return DevStack(settings, demo=args.demo, workers=args.workers).run()


def _checked_webhooks(path: Path) -> Path:
    """``LEDGER_WEBHOOKS``'s file, refused (with the key and the problem) unless
    it can be used, as an absolute path."""
    from consent_ledger.webhooks import WebhooksError, load_webhooks

    try:
        load_webhooks(path)
    except WebhooksError as exc:
        raise UsageError(f"LEDGER_WEBHOOKS: {exc}") from None
    return path.resolve()


def _worker(args: argparse.Namespace) -> int:
    from consent_ledger.worker.app import WorkerNotReady, run_worker

    settings = settings_from_env()
    configure_logging()
    if not settings.kafka_bootstrap or not settings.database_url:
        raise UsageError("set LEDGER_KAFKA_BOOTSTRAP and LEDGER_DATABASE_URL")
    try:
        run_worker(settings, load_policy_versions(settings.policy_path))
    except WorkerNotReady as exc:
        raise UsageError(f"not joining the consumer group: {exc}") from None
    return EXIT_OK


def _api(args: argparse.Namespace) -> int:
    import asyncio

    from consent_ledger.api.app import serve

    settings = settings_from_env()
    configure_logging()
    if not settings.database_url:
        raise UsageError("set LEDGER_DATABASE_URL")
    asyncio.run(serve(settings))
    return EXIT_OK


def _migrate(args: argparse.Namespace) -> int:
    import asyncio

    import asyncpg

    from consent_ledger.store.migrate import migrate

    settings = settings_from_env()
    configure_logging()
    if not settings.database_url:
        raise UsageError("set LEDGER_DATABASE_URL")

    async def run() -> list[str]:
        connection = await asyncpg.connect(settings.database_url)
        try:
            return await migrate(connection)
        finally:
            await connection.close()

    try:
        applied = asyncio.run(run())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise UsageError(f"cannot migrate the database: {type(exc).__name__}: {exc}") from None
    sys.stdout.write(f"applied {', '.join(applied)}\n" if applied else "the schema is up to date\n")
    return EXIT_OK
