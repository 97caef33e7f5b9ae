"""The stream worker: a faust-streaming application over ``ledger.events``.

One faust task reads the topic as a channel, in batches (everything that
arrived while the previous batch was written), turns them into
:class:`~consent_ledger.core.batch.Record` s with their partition, offset and
headers, and hands them to the :class:`BatchPipeline`. It acks a batch's
events after the batch's PostgreSQL transaction committed, and faust commits
acked offsets to Kafka every ``broker_commit_interval``. PostgreSQL keeps its
own positions in the same transaction as the rows, so records that Kafka
redelivers after a crash or a rebalance are recognised and skipped.

Values are consumed raw (:class:`~consent_ledger.worker.lean_faust.RawRecords`):
a faust topic with a decoding serializer drops records it cannot decode, and
the ledger must keep and report every malformed record instead.

Size: about 550 lines: the faust application and what runs beside its
batch loop in the same process (outbox relay, checkpoint timer, copies to
witnesses, re-judging after a policy publication, the start-up checks).
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import faust
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from faust.types.auth import CredentialsT

from consent_ledger.core.batch import Record
from consent_ledger.core.intake import Reason
from consent_ledger.core.policy import Policy, PolicyVersions
from consent_ledger.core.timeline import Status
from consent_ledger.integrity.checkpoints import (
    SignedCheckpoint,
    key_id,
    load_signing_key,
    public_key_pem,
)
from consent_ledger.integrity.keyring import load_keyring, load_master_key
from consent_ledger.kafka import KafkaSecurity, kafka_security, make_producer, start_producer
from consent_ledger.log import redact_values, stdlib_logging_config
from consent_ledger.settings import Settings
from consent_ledger.store.checkpoint_copies import CheckpointCopies
from consent_ledger.store.checkpoint_issuer import issue_checkpoint
from consent_ledger.store.key_rotation import register_signing_key
from consent_ledger.store.migrate import migrate
from consent_ledger.webhooks import Webhook, WebhooksError, load_webhooks
from consent_ledger.worker.isolation import is_transient, store_isolating
from consent_ledger.worker.lean_faust import RawRecords, lean_consumer
from consent_ledger.worker.pipeline import BatchPipeline, BatchReport
from consent_ledger.worker.relay import OutboxRelay
from consent_ledger.worker.webhooks import WebhookDispatcher
from consent_ledger.worker.witnesses import WitnessCourier

log = structlog.get_logger(__name__)

# How often a worker looks for re-judging owed to a policy publication.
REJUDGING_INTERVAL_S = 1.0


class WorkerRuntime:
    """The connections a worker process holds, opened once when it first needs them."""

    def __init__(
        self,
        settings: Settings,
        policy: PolicyVersions | Policy,
        webhooks: Sequence[Webhook] = (),
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.webhooks_configured = tuple(webhooks)
        self._opened = asyncio.Lock()
        self.pool: asyncpg.Pool | None = None
        self.pipeline: BatchPipeline | None = None
        self.relay: OutboxRelay | None = None
        self.witnesses: WitnessCourier | None = None
        self.webhooks: WebhookDispatcher | None = None
        self.signing_key: Ed25519PrivateKey | None = None
        self._producer: AIOKafkaProducer | None = None
        self.copies = CheckpointCopies(
            (settings.checkpoints_topic, settings.checkpoint_history_topic),
            settings.witness_urls,
        )
        # Held while a batch is written: a stopping worker waits for it, then signs.
        self._writing = asyncio.Lock()
        self._signing_file: SigningKeyFile | None = None
        self.batches = 0
        self.isolated = 0  # records rejected as unprocessable by this process

    async def open(self) -> None:
        async with self._opened:
            if self.pool is not None:
                return
            settings = self.settings
            pool = await asyncpg.create_pool(
                settings.database_url, min_size=2, max_size=4, reset=keep_session
            )
            assert pool is not None
            async with pool.acquire() as connection:
                await migrate(connection)
            keyring = load_keyring(settings.master_key_file, settings.master_key)
            producer = make_producer(settings, client_id="consent-ledger-relay")
            await start_producer(producer, settings)
            if settings.signing_key_file is not None:
                self._signing_file = SigningKeyFile(Path(settings.signing_key_file))
                self.signing_key = self._signing_file.load()
                async with pool.acquire() as connection:
                    await register_signing_key(
                        connection, key_id(self.signing_key), public_key_pem(self.signing_key)
                    )
            self.pipeline = BatchPipeline(pool, keyring, self.policy, settings)
            self.webhooks = WebhookDispatcher(
                pool, self.webhooks_configured, topic=settings.violations_topic,
                timeout_s=settings.webhook_timeout_s,
                horizon_s=settings.webhook_retry_horizon_s,
            )  # fmt: skip
            self.relay = OutboxRelay(pool, producer, webhooks=self.webhooks)
            self.witnesses = WitnessCourier(pool, settings.witness_urls)
            self._producer = producer
            self.pool = pool
            # What exists now (modules, faust, the policy) lives as long as the
            # process: out of the collector's sight, a full collection no longer
            # walks it in the middle of a batch (seen: 80 ms pauses).
            gc.collect()
            gc.freeze()

    async def current_signing_key(self) -> Ed25519PrivateKey | None:
        """The signing key, taken up anew when its file changed (`keys
        rotate-signing`, or a secret updated in place); a new key's public half
        is registered before it signs anything, so the API can list it."""
        if self._signing_file is None or self.pool is None or not self._signing_file.changed():
            return self.signing_key
        key = self._signing_file.load()
        async with self.pool.acquire() as connection:
            await register_signing_key(connection, key_id(key), public_key_pem(key))
        previous = key_id(self.signing_key) if self.signing_key is not None else None
        log.info("signing key changed", key_id=key_id(key), previous=previous)
        self.signing_key = key
        return key

    async def sign_checkpoint(self) -> SignedCheckpoint | None:
        """Sign a checkpoint of every tree that grew since the last one, stage its
        copies and wake those who send them. None when nothing grew or no key is set."""
        if self.signing_key is None or self.pool is None:
            return None
        signing_key = await self.current_signing_key()
        assert signing_key is not None
        signed = await issue_checkpoint(
            self.pool, signing_key, self.settings.log_id, copies=self.copies
        )
        if signed is not None:
            log.info("checkpoint signed", heads=len(signed.checkpoint.tree_heads))
            if self.relay is not None:
                self.relay.notify()
            if self.witnesses is not None:
                self.witnesses.notify()
        return signed

    async def close(self, *, within_s: float = 10.0) -> None:
        """The worker is stopping: let a batch being written commit, sign what was
        written since the last checkpoint (CONTRACT §10), send it on for up to
        ``within_s`` seconds (what is not sent by then waits in the outbox and
        ``witness_deliveries`` for the next worker), release the connections."""
        deadline = time.monotonic() + within_s
        async with self._opened:
            if self.pool is not None:
                try:
                    await self._finish(deadline)
                except Exception as exc:  # still release the connections below
                    log.warning("no last checkpoint", error=repr(exc))
            if self._producer is not None:
                await self._producer.stop()
            if self.pool is not None:
                await self.pool.close()
            self.pool = self.pipeline = self.relay = self.witnesses = self._producer = None
            self.webhooks = None

    async def _finish(self, deadline: float) -> None:
        try:
            # Held from here on: no batch starts after the last checkpoint.
            await asyncio.wait_for(self._writing.acquire(), timeout=deadline - time.monotonic())
        except TimeoutError:
            log.warning("a batch is still being written; signing what has committed")
        signed = await self.sign_checkpoint()
        if signed is not None:
            log.info("last checkpoint signed", heads=len(signed.checkpoint.tree_heads))
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.1)):
                assert self.relay is not None
                while await self.relay.relay_once():
                    pass
        except Exception as exc:  # the outbox keeps what was not sent, for the next worker
            log.warning("outbox not drained while stopping", error=repr(exc))
        if self.witnesses is not None:
            await self.witnesses.deliver_due(max(deadline - time.monotonic(), 0.1))

    async def process(self, records: Sequence[Record]) -> list[BatchReport]:
        """Persist one batch: an outage is waited out with backoff and the batch
        retried until it commits (what committed before is skipped); a record that
        cannot be stored is isolated and rejected (worker/isolation.py). One
        report per transaction committed."""
        assert self.pipeline is not None and self.relay is not None
        delay = 0.1
        async with self._writing:  # a stopping worker signs only after this commits
            while True:
                try:
                    reports = await store_isolating(self.pipeline, records)
                    break
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    log.warning(
                        "batch failed, retrying", error=redact_values(repr(exc)), retry_in_s=delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        for report in reports:
            self.batches += 1
            self.isolated += report.rejected_by_reason[Reason.UNPROCESSABLE.value]
            if report.outbox:
                self.relay.notify()
            _log_batch(report)
        return reports


async def keep_session(connection: asyncpg.Connection) -> None:
    """The worker's pool reset: none. The worker sets no session state (its advisory
    locks end with their transactions, or are released where taken), and asyncpg
    still rolls back an open transaction on release; the default reset statement
    is one more round trip per batch."""


def _log_batch(report: BatchReport) -> None:
    """One line per batch, and one per rejected record and per violation change,
    each with the event id, partition and offset it concerns."""
    outcome = report.outcome
    if outcome is not None:
        for record, rejection in outcome.rejected:
            log.warning(
                "record rejected", event_id=rejection.event_id, partition=record.partition,
                offset=record.offset, reason=rejection.reason.value, detail=redact_values(rejection.detail),
            )  # fmt: skip
        where = {item.event.id: item.record for item in outcome.accepted}
        for change in outcome.changes:
            violation = change.violation
            judged = where.get(violation.event_id)  # None: an earlier event, re-judged
            log.info(
                "violation opened" if change.status is Status.OPEN else "violation retracted",
                event_id=violation.event_id,
                rule=violation.rule.value, severity=violation.severity.value,
                partition=judged.partition if judged else None, offset=judged.offset if judged else None,
            )  # fmt: skip
    log.info(
        "batch committed",
        records=report.records,
        skipped=report.skipped,
        accepted=sum(report.accepted_by_type.values()),
        duplicates=report.duplicates,
        rejected=sum(report.rejected_by_reason.values()),
        opened=sum(report.opened_by_rule.values()),
        retracted=sum(report.retracted_by_rule.values()),
        first=report.first,
        last=report.last,
        ms=round(report.seconds * 1000, 1),
        stages_ms=report.stages_ms,
    )


def _record(event: Any) -> Record:
    message = event.message
    headers = message.headers or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    return Record(
        message.partition, message.offset, message.value or b"", tuple(headers), message.key
    )


async def take_batch(channel: Any, limit: int) -> list[Any]:
    """The next batch from a faust channel: wait for one event, then take every
    event already waiting, up to ``limit``. What gathered while the previous
    batch was written is the next batch: batches grow with the load (more rows
    per transaction when busy) and stay small when quiet (no waiting to fill)."""
    batch = [await channel.get()]
    while len(batch) < limit and not channel.empty():
        batch.append(await channel.get())  # returns at once: the queue holds it
    return batch


def create_app(
    settings: Settings, policy: PolicyVersions | Policy, webhooks: Sequence[Webhook] = ()
) -> tuple[faust.App, WorkerRuntime]:
    """The faust app of one worker process, and the runtime its agents share."""
    if not settings.kafka_bootstrap or not settings.database_url:
        raise ValueError("the worker needs LEDGER_KAFKA_BOOTSTRAP and LEDGER_DATABASE_URL")
    # faust wants a data folder even with in-memory tables, and by default makes
    # one in the working directory; nothing in it outlives the process.
    datadir = tempfile.mkdtemp(prefix="consent-ledger-worker-")
    app = faust.App(
        settings.consumer_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(kafka_security(settings)),
        store="memory://",
        datadir=datadir,
        autodiscover=False,
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 4),
        broker_rebalance_timeout=settings.session_timeout_s,
        # The channel's buffer: room for several fetches (a full buffer makes
        # faust hand every further record over through a task of its own).
        stream_buffer_maxsize=max(16_384, settings.batch_size * 8),
        stream_wait_empty=False,  # nothing to wait for: acks follow the commit, not a Stream
        producer_acks=-1,
    )
    weakref.finalize(app, shutil.rmtree, datadir, ignore_errors=True)  # also at exit
    # This app's transport only.
    app.transport.Consumer = lean_consumer(settings.fetch_max_wait_ms)  # type: ignore[misc]
    runtime = WorkerRuntime(settings, policy, webhooks)
    events = app.topic(settings.events_topic, schema=RawRecords(), partitions=settings.partitions)

    # The topic is read as a faust channel, in batches, rather than through an
    # agent's Stream: the Stream's per-event machinery (an event-loop turn per
    # event, processors, current-event bookkeeping) cost more than half of
    # faust's time here and does nothing for a batch writer. Events are acked
    # only after their batch's transaction committed, and faust commits acked
    # offsets. Any error crashes the worker (an app task that raises crashes
    # the app); a restart resumes from PostgreSQL's positions.
    # Iterating subscribes faust's consumer to the topic; here, not in the task,
    # so that the topic is known when the consumer first subscribes.
    channel = aiter(events)

    @app.task
    async def intake() -> None:
        await runtime.open()
        while True:
            batch = await take_batch(channel, settings.batch_size)
            await runtime.process([_record(event) for event in batch])
            for event in batch:
                event.ack()

    @app.task
    async def relay() -> None:
        await runtime.open()
        assert runtime.relay is not None
        await runtime.relay.run()

    @app.task
    async def witnesses() -> None:
        await runtime.open()
        assert runtime.witnesses is not None
        await runtime.witnesses.run(idle_poll_s=min(5.0, settings.checkpoint_interval_s))

    @app.task
    async def alert_webhooks() -> None:
        await runtime.open()
        assert runtime.webhooks is not None
        await runtime.webhooks.run()

    @app.timer(settings.checkpoint_interval_s)
    async def checkpoint() -> None:
        await runtime.open()
        try:
            await runtime.sign_checkpoint()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("checkpoint failed, will retry at the next interval", error=repr(exc))

    @app.timer(REJUDGING_INTERVAL_S)
    async def rejudging() -> None:
        """Re-judge after a policy publication, a step (one transaction) at a time:
        batches go on between steps. Every worker may take steps; they
        serialise on the policy revision's row lock."""
        await runtime.open()
        assert runtime.pipeline is not None and runtime.relay is not None
        while True:
            try:
                step = await runtime.pipeline.rejudge()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("re-judging failed, will retry", error=repr(exc))
                return
            if step is None:
                return
            if step.alerts:
                runtime.relay.notify()
            log.info(
                "re-judged after a policy publication", revision=step.revision,
                subjects=step.subjects, changes=len(step.changes),
                relabelled=len(step.relabelled), done=step.done,
            )  # fmt: skip
            await asyncio.sleep(0)  # let a waiting batch take its turn

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # as on_before_shutdown
    async def assigned(sender: Any, assigned: Any, **__: Any) -> None:
        log.info("partitions assigned", partitions=_partitions(assigned, settings.events_topic))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # as on_before_shutdown
    async def revoked(sender: Any, revoked: Any, **__: Any) -> None:
        partitions = _partitions(revoked, settings.events_topic)
        if partitions:  # faust also revokes nothing before the first assignment
            log.info("partitions revoked", partitions=partitions)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types want a signal kwarg
    async def release(sender: Any, *_: Any, **__: Any) -> None:
        await runtime.close()
        log.info("worker stopped", batches=runtime.batches, isolated=runtime.isolated)

    return app, runtime


def faust_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """The transport of ``security`` as faust's ``broker_credentials``, which faust
    hands to every client it makes (consumer, producer, topic creation)."""
    if security.mechanism is not None:
        # faust derives SASL_SSL from the context's presence, SASL_PLAINTEXT from its absence.
        return faust.SASLCredentials(
            username=security.username,
            password=security.password,
            ssl_context=security.ssl_context,
            mechanism=security.mechanism,
        )
    if security.ssl_context is not None:
        return faust.SSLCredentials(security.ssl_context)
    return None


class SigningKeyFile:
    """The worker's signing key file, and whether it changed since it was read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None

    def load(self) -> Ed25519PrivateKey:
        self._stamp = self._file_stamp()
        return load_signing_key(self.path)

    def changed(self) -> bool:
        stamp = self._file_stamp()
        return stamp is not None and stamp != self._stamp  # a file being replaced: later

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            status = self.path.stat()
        except OSError:
            return None
        return status.st_mtime_ns, status.st_size, status.st_ino


def _partitions(topic_partitions: Any, topic: str) -> list[int]:
    return sorted(tp.partition for tp in topic_partitions if tp.topic == topic)


class WorkerNotReady(Exception):
    """What the worker needs is missing or unreachable: it must not join its group."""


def configured_webhooks(settings: Settings) -> tuple[Webhook, ...]:
    """The hooks ``LEDGER_WEBHOOKS`` names (none when unset); a file that cannot
    be used is refused here, with its key and the problem, rather than found
    out when the first alert is due."""
    if settings.webhooks is None:
        return ()
    try:
        hooks = load_webhooks(Path(settings.webhooks))
    except WebhooksError as exc:
        raise WorkerNotReady(f"LEDGER_WEBHOOKS: {exc}") from None
    log.info("alert webhooks", hooks=[hook.name for hook in hooks])
    return hooks


def check_ready(settings: Settings) -> None:
    """Load the keys and migrate the database before the worker joins its consumer
    group: a worker that joined and then crashed would make the group rebalance
    twice, stalling the healthy workers each time (seen: 3 s gaps, in a crash loop
    again and again)."""
    try:
        load_master_key(settings.master_key_file, settings.master_key)
        if settings.signing_key_file is not None:
            load_signing_key(Path(settings.signing_key_file))
    except (OSError, ValueError) as exc:
        raise WorkerNotReady(str(exc)) from None
    for url in settings.witness_urls:
        # Refused here, not retried with backoff for ever once a checkpoint is due.
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise WorkerNotReady(f"LEDGER_WITNESSES: {url!r} is not an http:// or https:// URL")
    assert settings.database_url is not None

    async def migrated() -> None:
        connection = await asyncpg.connect(settings.database_url, timeout=10)
        try:
            await migrate(connection)
        finally:
            await connection.close()

    loop = asyncio.new_event_loop()  # not asyncio.run: it would unset the loop faust takes
    try:
        loop.run_until_complete(migrated())
        missing = (
            loop.run_until_complete(missing_checkpoint_topics(settings))
            if settings.signing_key_file is not None
            else []
        )
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise WorkerNotReady(f"cannot use the database: {type(exc).__name__}: {exc}") from None
    finally:
        loop.close()
    if missing:
        # The outbox relay would keep a message for a missing topic, and every
        # alert written after it, for its next pass, for ever.
        raise WorkerNotReady(
            f"the checkpoint topics {', '.join(missing)} do not exist: create them "
            "(deploy/README.md, Kafka topics)"
        )


async def missing_checkpoint_topics(settings: Settings, within_s: float = 15.0) -> list[str]:
    """The checkpoint topics the broker does not list. Empty also when the broker
    does not answer within ``within_s``: an outage is waited out by the worker,
    not refused here."""
    wanted = {settings.checkpoints_topic, settings.checkpoint_history_topic}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        **kafka_security(settings).client_options(),
    )
    try:
        async with asyncio.timeout(within_s):
            await consumer.start()
            present: set[str] = await consumer.topics()
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("the broker did not list its topics; not checking them", error=repr(exc))
        return []
    finally:
        await consumer.stop()
    return sorted(wanted - present)


def make_worker(
    settings: Settings,
    policy: PolicyVersions | Policy,
    *,
    loglevel: str = "warning",
    webhooks: Sequence[Webhook] = (),
) -> faust.Worker:
    """The faust worker that runs one worker process's app."""
    app, _ = create_app(settings, policy, webhooks)
    worker = faust.Worker(
        app, loglevel=loglevel, quiet=True, redirect_stdouts=False,
        logging_config=stdlib_logging_config(loglevel),
    )  # fmt: skip
    # No start-up spinner: to spin on every log record, faust sets the root
    # logger to DEBUG for as long as the worker runs, and aiokafka then builds
    # a record for each of its debug calls, several per fetch and per send
    # (4 % of the worker's busy samples at 2,000 events/s).
    worker.spinner = None
    return worker


def run_worker(settings: Settings, policy: PolicyVersions | Policy) -> None:
    """Run a worker until it is stopped (SIGINT/SIGTERM): ``consent-ledger worker``.
    Raises :class:`WorkerNotReady` before joining the group if it could not work."""
    webhooks = configured_webhooks(settings)
    check_ready(settings)
    log.info(
        "worker joining its consumer group", group=settings.consumer_group,
        topic=settings.events_topic, integrity=settings.integrity,
    )  # fmt: skip
    if not settings.integrity:
        log.warning(
            "LEDGER_INTEGRITY=false: entries are stored unsealed and outside the Merkle logs"
        )
    make_worker(settings, policy, webhooks=webhooks).execute_from_commandline()
