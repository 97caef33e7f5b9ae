"""One batch of ``ledger.events`` records into PostgreSQL, in one transaction.

check (pure, outside the transaction) -> lock and load (the batch's partition
positions, then what the ledger knows of its ids and subjects:
store/batch_read.py) -> settle (pure: core/batch.py) -> write (one statement:
store/batch_write.py). Records a previous run already committed are skipped
by the positions stored with the rows they produced. The caller commits Kafka
offsets only after this returns, so a crash anywhere loses nothing.

Five round trips per batch (BEGIN, lock, read, write, COMMIT: folding them
further would need pipelining, which asyncpg lacks), against two dozen when
each table had its statement or COPY: on two shared cores a round trip costs
more than the rows it carries, and small batches, the ones a steady load
makes, are nearly all round trips.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import asyncpg
import orjson
import structlog

from consent_ledger.core.batch import (
    BatchOutcome,
    Checked,
    Record,
    batch_needs,
    check_records,
    filed_subject,
    key_subject,
    settle_batch,
    subject_of_rejected,
)
from consent_ledger.core.intake import Reason, Rejection
from consent_ledger.core.policy import Policy, PolicyVersions, as_versions
from consent_ledger.core.timeline import Status
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.kafka import PRODUCER_MAX_REQUEST_BYTES
from consent_ledger.settings import Settings
from consent_ledger.store import row_counts
from consent_ledger.store.batch_read import load_batch_state, lock_positions
from consent_ledger.store.batch_write import BatchTopics, BatchWriter, SettledBatch
from consent_ledger.store.policy_versions import (
    PolicySet,
    RejudgingStep,
    advance_rejudging,
    rejudge_step,
    sealed_data_opener,
)

log = structlog.get_logger(__name__)

# Subjects re-judged per transaction after a publication: batches wait while
# one runs, so it stays short (a few hundred subjects: tens of milliseconds).
REJUDGE_SUBJECTS_PER_STEP = 200


@dataclass(slots=True)
class BatchReport:
    """What one batch did, for logs and metrics."""

    records: int = 0
    first: str = ""  # partition@offset of the batch's first record
    last: str = ""  # and of its last
    skipped: int = 0  # already committed by an earlier run
    accepted_by_type: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    opened_by_rule: Counter[str] = field(default_factory=Counter)
    retracted_by_rule: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    outbox: int = 0  # messages written for the relay
    stages_ms: dict[str, float] = field(default_factory=dict)  # where the time went
    outcome: BatchOutcome | None = None  # what was decided, record by record


class BatchPipeline:
    """Turns batches of records into committed ledger rows; one per worker process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        keyring: KeyRing,
        policy: PolicyVersions | Policy,
        settings: Settings,
    ) -> None:
        self._pool = pool
        # Each event judged under the version in force at its time, from the set
        # the batch's transaction read (configured versions and published ones).
        self.policies = PolicySet(as_versions(policy))
        self._topic = settings.events_topic
        topics = BatchTopics(
            settings.events_topic, settings.violations_topic, settings.rejected_topic,
            PRODUCER_MAX_REQUEST_BYTES,
        )  # fmt: skip
        self._keyring = keyring
        self._writer = BatchWriter(keyring, topics, integrity=settings.integrity)
        self._batches_unfolded = 0  # batches committed since the kept counts were folded

    async def process(self, records: Sequence[Record]) -> BatchReport:
        """Check, settle and persist ``records`` (one or more partitions, offset order
        within each) in one transaction."""
        started = time.perf_counter()
        report = BatchReport(records=len(records), first=_at(records[0]), last=_at(records[-1]))
        stages = report.stages_ms
        checked = check_records(records)  # pure and the costliest step: outside the transaction
        # A master key file changed in place (a rotation): new subject keys are
        # wrapped by its newest key from this batch on. One stat per batch.
        self._keyring.refresh()
        stages["check"] = _ms_since(started)
        async with self._pool.acquire() as connection, connection.transaction():
            stage = time.perf_counter()
            partitions = list({record.partition for record in records})
            positions = await lock_positions(connection, self._topic, partitions)
            fresh = [item for item in checked
                     if item.record.offset >= positions[item.record.partition]]  # fmt: skip
            report.skipped = len(checked) - len(fresh)
            if not fresh:
                report.seconds = time.perf_counter() - started
                return report
            state = await load_batch_state(
                connection,
                batch_needs(fresh),
                sorted({item.record.partition for item in fresh}),
                _named_by_rejected(item.record for item in fresh
                                   if isinstance(item.outcome, Rejection)),
            )  # fmt: skip
            stages["load"] = _ms_since(stage)
            stage = time.perf_counter()
            policies = await self.policies.at(connection, state.policy_revision)
            outcome = settle_batch(
                fresh, state.digests, state.files, policies, iter(state.sequence)
            )
            stages["settle"] = _ms_since(stage)
            stage = time.perf_counter()
            settled = SettledBatch(fresh, state, outcome, started)
            report.outbox = await self._writer.write(connection, settled)
            stages["write"] = _ms_since(stage)
        _count(report, outcome)
        report.seconds = time.perf_counter() - started
        await self._fold_counts()
        return report

    async def _fold_counts(self) -> None:
        """Every :data:`~consent_ledger.store.row_counts.COMPACT_EVERY_BATCHES`
        batches, fold the count deltas the batches' triggers added (migration 021),
        after the batch committed: the counts are exact without it, so a fold that
        fails is only logged and tried again later."""
        self._batches_unfolded += 1
        if self._batches_unfolded < row_counts.COMPACT_EVERY_BATCHES:
            return
        self._batches_unfolded = 0
        try:
            async with self._pool.acquire() as connection:
                await row_counts.compact(connection)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("folding the kept counts failed", error=repr(exc))

    async def rejudge(self, subjects: int = REJUDGE_SUBJECTS_PER_STEP) -> RejudgingStep | None:
        """One step of the oldest pending re-judging after a policy publication:
        the next ``subjects`` subjects, in one transaction that holds batches off
        (store/policy_versions.py); None when nothing is pending."""
        open_data = sealed_data_opener(self._writer.keyring)
        async with self._pool.acquire() as connection, connection.transaction():
            step = await rejudge_step(connection, self.policies, open_data, subjects)
            if step is None:
                return None
            assert step.published_at is not None
            step.alerts = await self._writer.write_rejudged(
                connection, step.changes, step.relabelled, step.published_at
            )
            await advance_rejudging(connection, step)
        return step

    async def reject_unprocessable(self, record: Record, detail: str) -> BatchReport:
        """Commit ``record`` as rejected ``unprocessable``, with ``detail`` (the error
        storing it raised), and advance its partition past it: the last resort
        for a record that passed intake but that the ledger cannot store
        (worker/isolation.py finds it). Nothing of it is read but its bytes, its
        key and the subject and id its value names, each kept only if PostgreSQL
        can store it."""
        started = time.perf_counter()
        report = BatchReport(records=1, first=_at(record), last=_at(record))
        rejection = Rejection(Reason.UNPROCESSABLE, detail, _storable_event_id(record))
        checked = [Checked(record, rejection)]
        async with self._pool.acquire() as connection, connection.transaction():
            positions = await lock_positions(connection, self._topic, [record.partition])
            if record.offset < positions[record.partition]:
                report.skipped = 1  # committed meanwhile (a rebalance): nothing to reject
                report.seconds = time.perf_counter() - started
                return report
            state = await load_batch_state(
                connection, batch_needs([]), [record.partition], _named_by_rejected([record])
            )
            outcome = BatchOutcome(rejected=[(record, rejection)])
            settled = SettledBatch(checked, state, outcome, started)
            report.outbox = await self._writer.write(connection, settled)
        _count(report, outcome)
        report.seconds = time.perf_counter() - started
        return report


def _named_by_rejected(records: Iterable[Record]) -> list[str]:
    """The subjects rejected records name, by value or by Kafka key: whether they
    were erased decides whether their bytes are kept."""
    named: dict[str, None] = {}
    for record in records:
        for subject in (subject_of_rejected(record), key_subject(record.key)):
            if subject is not None:
                named[subject] = None
    return list(named)


def _storable_event_id(record: Record) -> str | None:
    """The id an unprocessable record's value names, if it can be stored and shown."""
    try:
        body = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None
    event_id = body.get("id") if isinstance(body, dict) else None
    return filed_subject(event_id) if isinstance(event_id, str) else None


def _count(report: BatchReport, outcome: BatchOutcome) -> None:
    """Tally what the committed batch decided, for the batch's log line and metrics."""
    report.outcome = outcome
    for accepted in outcome.accepted:
        report.accepted_by_type[accepted.event.type] += 1
    report.duplicates = len(outcome.duplicates)
    for _, rejection in outcome.rejected:
        report.rejected_by_reason[rejection.reason.value] += 1
    for change in outcome.changes:
        by_rule = (
            report.opened_by_rule if change.status is Status.OPEN else report.retracted_by_rule
        )
        by_rule[change.violation.rule.value] += 1


def _at(record: Record) -> str:
    return f"{record.partition}@{record.offset}"


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)
