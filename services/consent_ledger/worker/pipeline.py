"""One batch of ``ledger.events`` records into PostgreSQL, in one transaction.

Per batch: check every record (pure), then in one transaction lock the
batch's partition positions, skip records a previous run already committed,
read what the ledger knows of the batch's ids and subjects (one statement:
ledger/batch_state.py), settle the batch with the core, and write everything
it decided in one more statement: ledger entries (sealed payloads, Merkle
leaves), facts, the current-consent projection, violations, outbox messages
(alerts, rejected copies), rejected records, and the new positions and
counts (a large batch sends its ledger entries by COPY first). Erasures,
which are rare, take a few statements of their own. The
caller commits Kafka offsets only after this returns, so a crash anywhere
loses nothing, and a replayed batch is skipped by the positions stored with
the rows it produced.

Five round trips per batch (BEGIN, lock, read, write, COMMIT: folding them
further would need pipelining, which asyncpg lacks), against two dozen when
each table had its statement or COPY: on two shared cores a round trip costs
more than the rows it carries, and small batches, the ones a steady load
makes, are nearly all round trips.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import structlog

from consent_ledger.core.batch import (
    BatchOutcome,
    Checked,
    Record,
    batch_needs,
    check_records,
    settle_batch,
)
from consent_ledger.core.facts import ConsentChange, Disclosure
from consent_ledger.core.intake import Rejection, compact_json, subject_named_in
from consent_ledger.core.policy import Policy, PolicyVersions, as_versions
from consent_ledger.core.timeline import Status, ViolationChange
from consent_ledger.core.timestamps import to_micros
from consent_ledger.ledger.batch_state import BatchState, load_batch_state
from consent_ledger.ledger.entry import encode_entry
from consent_ledger.ledger.keyring import KeyRing
from consent_ledger.ledger.merkle import MerkleFrontier, leaf_hash
from consent_ledger.ledger.shredding import SubjectSealer, new_subject_key
from consent_ledger.ledger.sql import as_columns
from consent_ledger.settings import Settings

log = structlog.get_logger(__name__)

# Creates missing rows and locks them all, in partition order, in one statement:
# the no-op update takes the row lock and returns the stored position. Its own
# statement: what the batch reads next must be read after the lock is held.
LOCK_POSITIONS = """
INSERT INTO consumer_positions (topic, kafka_partition, next_offset)
SELECT $1, p, 0 FROM unnest($2::int[]) AS p ORDER BY p
ON CONFLICT (topic, kafka_partition) DO UPDATE SET next_offset = consumer_positions.next_offset
RETURNING kafka_partition, next_offset
"""
# Everything a batch writes, one data-modifying CTE per table, each fed by one
# array of the table's own row type (a list of tuples in the table's column
# order; empty lists insert nothing). Row arrays rather than an array per
# column: asyncpg checks each element of an array parameter with isinstance()
# against collections.abc, three checks per row instead of one or two per
# value (measured: 29 µs per event as column arrays). Outbox rows keep the
# order of their array, so alerts are relayed in the order decided. A
# violation opened again after a retraction names the policy version that
# judged it this time.
WRITE_BATCH = """
WITH new_keys AS (
    INSERT INTO subject_keys SELECT * FROM unnest($1::subject_keys[])
), entries AS (
    INSERT INTO ledger_entries SELECT * FROM unnest($2::ledger_entries[])
), logs AS (
    INSERT INTO merkle_logs SELECT * FROM unnest($3::merkle_logs[])
    ON CONFLICT (kafka_partition) DO UPDATE SET size = EXCLUDED.size, frontier = EXCLUDED.frontier
), consents AS (
    INSERT INTO consent_changes SELECT * FROM unnest($4::consent_changes[])
), current_state AS (
    INSERT INTO current_consents SELECT * FROM unnest($5::current_consents[])
    ON CONFLICT (subject, purpose) DO UPDATE SET
        event_id = EXCLUDED.event_id, occurred_us = EXCLUDED.occurred_us, seq = EXCLUDED.seq,
        granted = EXCLUDED.granted, expires_us = EXCLUDED.expires_us
    WHERE (current_consents.occurred_us, current_consents.seq) < (EXCLUDED.occurred_us, EXCLUDED.seq)
), shared AS (
    INSERT INTO disclosures SELECT * FROM unnest($6::disclosures[])
), judged AS (
    INSERT INTO violations (event_id, rule, subject, severity, clause, explanation, status,
                            occurred_us, detected_at, updated_at, policy_version)
    SELECT event_id, rule, subject, severity, clause, explanation, status, occurred_us,
           detected_at, updated_at, policy_version
    FROM unnest($7::violations[])
    ON CONFLICT (event_id, rule) DO UPDATE SET status = EXCLUDED.status,
        updated_at = EXCLUDED.updated_at, policy_version = EXCLUDED.policy_version
), messages AS (
    INSERT INTO outbox (topic, key, value, headers, subject)
    SELECT topic, key, value, headers, subject FROM unnest($8::outbox[])
), refused AS (
    INSERT INTO rejected_events (kafka_partition, kafka_offset, reason, detail, event_id, subject,
                                 raw, recorded_at)
    SELECT kafka_partition, kafka_offset, reason, detail, event_id, subject, raw, recorded_at
    FROM unnest($9::rejected_events[])
)
UPDATE consumer_positions AS position SET
    next_offset = p.next_offset, accepted = position.accepted + p.accepted,
    duplicates = position.duplicates + p.duplicates, rejected = position.rejected + p.rejected,
    batches = position.batches + 1, batch_seconds = position.batch_seconds + $11,
    updated_at = now()
FROM unnest($12::int[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[])
    AS p(kafka_partition, next_offset, accepted, duplicates, rejected)
WHERE position.topic = $10 AND position.kafka_partition = p.kafka_partition
"""
# A large batch's ledger rows go by COPY, two round trips more, cheaper per row
# than the write statement's unnest() (COPY encodes each value by its column's
# codec, with no per-row checks).
COPY_ENTRIES_FROM = 200
UPSERT_ERASURE = """
INSERT INTO erasures (subject, event_id, erased_us, recorded_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (subject) DO UPDATE SET event_id = EXCLUDED.event_id, erased_us = EXCLUDED.erased_us
WHERE EXCLUDED.erased_us < erasures.erased_us
"""
ERASED_EXPLANATION = "Details erased at the request of the subject (GDPR Art. 17)."
FORGET_SUBJECTS = (
    "DELETE FROM subject_keys WHERE subject = ANY($1::text[])",
    "DELETE FROM consent_changes WHERE subject = ANY($1::text[])",
    "DELETE FROM current_consents WHERE subject = ANY($1::text[])",
    "DELETE FROM disclosures WHERE subject = ANY($1::text[])",
    "UPDATE rejected_events SET raw = '', detail = 'erased' WHERE subject = ANY($1::text[])",
)
SCRUB_EXPLANATIONS = "UPDATE violations SET explanation = $2 WHERE subject = ANY($1::text[])"
SCRUB_OUTBOX = (
    # Copies of rejected records not yet relayed carry raw personal data: drop them.
    "DELETE FROM outbox WHERE subject = ANY($1::text[]) AND topic <> $2",
    # Alerts not yet relayed go out without the details.
    """UPDATE outbox SET value = convert_to(
        jsonb_set(convert_from(value, 'UTF8')::jsonb, '{violation,explanation}', to_jsonb($3::text))::text,
        'UTF8') WHERE subject = ANY($1::text[]) AND topic = $2""",
)


@dataclass(slots=True)
class BatchReport:
    """What one batch did, for logs and metrics."""

    records: int = 0
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
        self._keyring = keyring
        self._policies = as_versions(policy)  # each event judged under the one in force
        self._settings = settings

    async def process(self, records: Sequence[Record]) -> BatchReport:
        """Check, settle and persist ``records`` (one or more partitions, offset order
        within each) in one transaction."""
        started = time.perf_counter()
        report = BatchReport(records=len(records))
        checked = check_records(records)  # pure and the costliest step: outside the transaction
        report.stages_ms["check"] = _ms_since(started)
        topic = self._settings.events_topic
        partitions = sorted({record.partition for record in records})
        async with self._pool.acquire() as connection, connection.transaction():
            positions = dict(await connection.fetch(LOCK_POSITIONS, topic, partitions))
            fresh = [
                item for item in checked if item.record.offset >= positions[item.record.partition]
            ]
            report.skipped = len(checked) - len(fresh)
            if fresh:
                await self._persist(connection, fresh, report, started)
        report.seconds = time.perf_counter() - started
        return report

    async def _persist(
        self,
        connection: asyncpg.Connection,
        checked: list[Checked],
        report: BatchReport,
        started: float,
    ) -> None:
        stage = time.perf_counter()
        needs = batch_needs(checked)
        named = (subject_named_in(item.record.value) for item in checked
                 if isinstance(item.outcome, Rejection))  # fmt: skip
        state = await load_batch_state(
            connection,
            needs,
            sorted({item.record.partition for item in checked}),
            [subject for subject in named if subject],
        )
        erased_before = {
            subject for subject, file in state.files.items() if file.erased_at is not None
        }
        report.stages_ms["load"] = _ms_since(stage)
        stage = time.perf_counter()
        outcome = settle_batch(
            checked, state.digests, state.files, self._policies, iter(state.sequence)
        )
        report.stages_ms["settle"] = _ms_since(stage)
        stage = time.perf_counter()
        now = datetime.now(UTC)
        forgotten = erased_before | set(outcome.erased)
        entries, new_keys, logs = self._entries(state, outcome, forgotten, now)
        consents, current, shared = _facts(outcome, forgotten)
        violations, alerts = self._violations(outcome.changes, forgotten, now)
        rejected, copies = self._rejected(outcome, state.erased | set(outcome.erased), now)
        positions = _positions(checked, outcome)
        if len(entries) >= COPY_ENTRIES_FROM:
            await connection.copy_records_to_table("ledger_entries", records=entries)
            entries = []
        elapsed = time.perf_counter() - started
        await connection.execute(
            WRITE_BATCH, new_keys, entries, logs, consents, current, shared, violations,
            alerts + copies, rejected, self._settings.events_topic, elapsed,
            *as_columns(positions, 5),
        )  # fmt: skip
        if outcome.erased:
            await self._forget(connection, outcome)
        report.stages_ms["write"] = _ms_since(stage)
        report.outbox = len(alerts) + len(copies)
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

    def _entries(
        self, state: BatchState, outcome: BatchOutcome, forgotten: set[str], now: datetime
    ) -> tuple[list[tuple[Any, ...]], list[tuple[str, bytes]], list[tuple[int, int, bytes]]]:
        """Ledger rows of the accepted events (sealed payloads, Merkle leaves), the
        data keys of new subjects, and the grown Merkle logs."""
        if not self._settings.integrity:
            return self._entries_without_integrity(state, outcome, now)
        recorded_us = to_micros(now)
        keys, new_keys = self._subject_keys(state, outcome, forgotten)
        frontiers: dict[int, MerkleFrontier] = {}
        sealers = {subject: SubjectSealer(key, subject) for subject, key in keys.items()}
        rows = []
        for record, event, fact, digest in outcome.accepted:
            payload = sealers[event.subject].seal(event.id, compact_json(event.body))
            payload_sha256 = _sha256(payload)
            frontier = frontiers.get(record.partition)
            if frontier is None:
                stored = state.logs.get(record.partition)
                frontier = frontiers[record.partition] = (
                    MerkleFrontier.from_bytes(stored[1]) if stored else MerkleFrontier()
                )
            leaf = leaf_hash(
                encode_entry(event.id, record.partition, record.offset, now, payload_sha256)
            )
            index = frontier.append(leaf)
            rows.append((
                fact.seq, event.id, event.subject, event.type, event.instant, now, recorded_us,
                record.partition, record.offset, digest, payload, payload_sha256, index, leaf,
            ))  # fmt: skip
        logs = [(partition, tree.size, tree.to_bytes()) for partition, tree in frontiers.items()]
        return rows, new_keys, logs

    def _entries_without_integrity(
        self, state: BatchState, outcome: BatchOutcome, now: datetime
    ) -> tuple[list[tuple[Any, ...]], list[tuple[str, bytes]], list[tuple[int, int, bytes]]]:
        """Benchmarks only (``LEDGER_INTEGRITY=false``): the same rows with the payload
        in clear and no digests or Merkle leaves, to measure what integrity costs."""
        recorded_us = to_micros(now)
        sizes: dict[int, int] = {}
        rows = []
        for record, event, fact, digest in outcome.accepted:
            index = sizes.get(record.partition, state.logs.get(record.partition, (0, b""))[0])
            sizes[record.partition] = index + 1
            rows.append((
                fact.seq, event.id, event.subject, event.type, event.instant, now, recorded_us,
                record.partition, record.offset, digest, compact_json(event.body), b"", index, b"",
            ))  # fmt: skip
        empty = MerkleFrontier().to_bytes()
        return rows, [], [(partition, size, empty) for partition, size in sizes.items()]

    def _subject_keys(
        self, state: BatchState, outcome: BatchOutcome, forgotten: set[str]
    ) -> tuple[dict[str, bytes], list[tuple[str, bytes]]]:
        """Data keys of the accepted events' subjects, and the wrapped keys of
        subjects new to the ledger, to store.

        Subjects erased before this batch get a throwaway key that is never
        stored: what arrives for them is unreadable from the start.
        """
        keys: dict[str, bytes] = {}
        new_keys = []
        for subject in {item.event.subject for item in outcome.accepted}:
            wrapped = state.wrapped_keys.get(subject)
            if wrapped is not None:
                keys[subject] = self._keyring.unwrap(subject, wrapped)
            elif subject in forgotten:
                keys[subject] = new_subject_key()  # never stored
            else:
                keys[subject], wrapped = self._keyring.new_key(subject)
                new_keys.append((subject, wrapped))
        return keys, new_keys

    async def _forget(self, connection: asyncpg.Connection, outcome: BatchOutcome) -> None:
        """Record the batch's erasures, and remove what the ledger keeps in clear of
        the subjects they erased."""
        now = datetime.now(UTC)
        await connection.executemany(
            UPSERT_ERASURE,
            [
                (subject, fact.event_id, fact.instant, now)
                for subject, fact in outcome.erased.items()
            ],
        )
        erased = list(outcome.erased)
        for statement in FORGET_SUBJECTS:
            await connection.execute(statement, erased)
        await connection.execute(SCRUB_EXPLANATIONS, erased, ERASED_EXPLANATION)
        drop_copies, scrub_alerts = SCRUB_OUTBOX
        await connection.execute(drop_copies, erased, self._settings.violations_topic)
        await connection.execute(
            scrub_alerts, erased, self._settings.violations_topic, ERASED_EXPLANATION
        )

    def _violations(
        self, changes: list[ViolationChange], forgotten: set[str], now: datetime
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """One row per violation the batch changed (its last change), and one alert
        per change."""
        changes = [
            ViolationChange(
                change.status, change.violation._replace(explanation=ERASED_EXPLANATION)
            )
            if change.violation.subject in forgotten
            else change
            for change in changes
        ]
        final = {change.violation.key: change for change in changes}
        rows = [
            (None, v.event_id, v.rule.value, v.subject, v.severity.value, v.clause, v.explanation,
             change.status.value, v.occurred_at, now, now, v.policy_version)
            for change in final.values()
            for v in (change.violation,)
        ]  # fmt: skip
        topic = self._settings.violations_topic
        alerts = [
            (None, topic, v.event_id.encode(), alert_message(change, now), "[]", v.subject)
            for change in changes
            for v in (change.violation,)
        ]
        return rows, alerts

    def _rejected(
        self, outcome: BatchOutcome, erased: set[str], now: datetime
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Rows of the rejected records, and their copies for ``ledger.rejected``;
        a record naming an erased subject is kept without its bytes, and not copied."""
        rows: list[tuple[Any, ...]] = []
        copies: list[tuple[Any, ...]] = []
        for record, rejection in outcome.rejected:
            subject = subject_named_in(record.value)
            if subject in erased:  # the raw record may hold personal data of a forgotten subject
                rows.append((
                    None, record.partition, record.offset, rejection.reason.value, "erased",
                    rejection.event_id, subject, b"", now,
                ))  # fmt: skip
                continue
            rows.append((
                None, record.partition, record.offset, rejection.reason.value, rejection.detail,
                rejection.event_id, subject, record.value, now,
            ))  # fmt: skip
            headers = [
                ["reason", rejection.reason.value],
                ["detail", rejection.detail],
                ["source_partition", str(record.partition)],
                ["source_offset", str(record.offset)],
            ]
            copies.append((
                None, self._settings.rejected_topic, subject.encode() if subject else None, record.value,
                orjson.dumps(headers).decode(), subject,
            ))  # fmt: skip
        return rows, copies


def _facts(
    outcome: BatchOutcome, forgotten: set[str]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Rows of the consent changes, of the current consents they move, and of the
    disclosures; none for subjects erased."""
    consents: list[tuple[Any, ...]] = []
    shared: list[tuple[Any, ...]] = []
    latest: dict[tuple[str, str], ConsentChange] = {}
    for _, event, fact, _ in outcome.accepted:
        if fact.subject in forgotten:
            continue
        data = event.body["data"]
        if isinstance(fact, ConsentChange):
            consents.append((
                fact.event_id, fact.subject, fact.purpose, fact.instant, fact.seq, fact.granted,
                fact.expires_at, data["controller"], data.get("channel"),
            ))  # fmt: skip
            key = (fact.subject, fact.purpose)
            current = latest.get(key)
            if current is None or (current.instant, current.seq) < (fact.instant, fact.seq):
                latest[key] = fact
        elif isinstance(fact, Disclosure):
            shared.append((
                fact.event_id, fact.subject, fact.purpose, fact.instant, fact.seq, fact.role,
                data["controller"], fact.recipient_kind, fact.recipient_id,
                list(fact.data_categories), fact.legal_basis_kind,
                fact.legal_basis_reference,
            ))  # fmt: skip
    current_rows = [
        (c.subject, c.purpose, c.event_id, c.instant, c.seq, c.granted, c.expires_at)
        for c in latest.values()
    ]
    return consents, current_rows, shared


def _positions(checked: list[Checked], outcome: BatchOutcome) -> list[tuple[int, ...]]:
    """Per partition: the next offset to read, and the accepted, duplicate and
    rejected counts the batch adds."""
    next_offset: dict[int, int] = {}
    for item in checked:
        partition = item.record.partition
        next_offset[partition] = max(next_offset.get(partition, 0), item.record.offset + 1)
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for accepted in outcome.accepted:
        counts[accepted.record.partition][0] += 1
    for record in outcome.duplicates:
        counts[record.partition][1] += 1
    for record, _ in outcome.rejected:
        counts[record.partition][2] += 1
    return [(partition, offset, *counts[partition]) for partition, offset in next_offset.items()]


def alert_message(change: ViolationChange, at: datetime) -> bytes:
    """The JSON message alerting hears on ``ledger.violations``."""
    violation = change.violation
    kind = "ViolationOpened" if change.status is Status.OPEN else "ViolationRetracted"
    return orjson.dumps({
        "type": kind,
        "id": f"{violation.event_id}/{violation.rule.value}/{change.status.value}/{to_micros(at)}",
        "time": at.isoformat().replace("+00:00", "Z"),
        "violation": violation.to_document() | {"status": change.status.value},
    })  # fmt: skip


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
