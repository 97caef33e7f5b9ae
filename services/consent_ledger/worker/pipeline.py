"""One batch of ``ledger.events`` records into PostgreSQL, in one transaction.

Per batch: check every record (pure), then in one transaction lock the
batch's partition positions, skip records a previous run already committed,
load what the ledger knows of the batch's ids and subjects, settle the batch
with the core, and write everything it decided: ledger entries (sealed
payloads, Merkle leaves), facts, the current-consent projection, erasures,
violations, outbox messages (alerts, rejected copies), rejected records, and
the new positions and counts. The caller commits Kafka offsets only after this
returns, so a crash anywhere loses nothing, and a replayed batch is skipped by
the positions stored with the rows it produced.
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
    Accepted,
    BatchOutcome,
    Checked,
    Record,
    batch_needs,
    check_records,
    settle_batch,
)
from consent_ledger.core.facts import ConsentChange, Disclosure
from consent_ledger.core.intake import compact_json, subject_named_in
from consent_ledger.core.policy import Policy
from consent_ledger.core.timeline import Status, ViolationChange
from consent_ledger.core.timestamps import to_micros
from consent_ledger.ledger.entry import encode_entry
from consent_ledger.ledger.keyring import KeyRing
from consent_ledger.ledger.merkle import MerkleFrontier, leaf_hash
from consent_ledger.ledger.shredding import SubjectSealer, new_subject_key
from consent_ledger.ledger.sql import as_columns
from consent_ledger.ledger.subject_files import ERASURES, load_subject_files
from consent_ledger.settings import Settings

log = structlog.get_logger(__name__)

# Creates missing rows and locks them all, in partition order, in one statement:
# the no-op update takes the row lock and returns the stored position.
LOCK_POSITIONS = """
INSERT INTO consumer_positions (topic, kafka_partition, next_offset)
SELECT $1, p, 0 FROM unnest($2::int[]) AS p ORDER BY p
ON CONFLICT (topic, kafka_partition) DO UPDATE SET next_offset = consumer_positions.next_offset
RETURNING kafka_partition, next_offset
"""
# Lookups take the batch's keys one by one through the index, whatever the
# planner's statistics say (see subject_files.py).
ACCEPTED_DIGESTS = """
SELECT e.* FROM unnest($1::text[]) AS batch(event_id)
CROSS JOIN LATERAL (
    SELECT event_id, digest FROM ledger_entries WHERE event_id = batch.event_id OFFSET 0
) e
"""
RESERVE_SEQ = "SELECT nextval('ledger_seq') FROM generate_series(1, $1)"
SUBJECT_KEYS = """
SELECT k.* FROM unnest($1::text[]) AS batch(subject)
CROSS JOIN LATERAL (
    SELECT subject, wrapped_key FROM subject_keys WHERE subject = batch.subject OFFSET 0
) k
"""
INSERT_KEYS = """
INSERT INTO subject_keys (subject, wrapped_key) SELECT * FROM unnest($1::text[], $2::bytea[])
"""
LOCK_LOGS = """
SELECT kafka_partition, frontier FROM merkle_logs
WHERE kafka_partition = ANY($1::int[]) FOR UPDATE
"""
LOG_SIZES = """
SELECT kafka_partition, size FROM merkle_logs WHERE kafka_partition = ANY($1::int[]) FOR UPDATE
"""
UPSERT_LOG = """
INSERT INTO merkle_logs (kafka_partition, size, frontier) VALUES ($1, $2, $3)
ON CONFLICT (kafka_partition) DO UPDATE SET size = EXCLUDED.size, frontier = EXCLUDED.frontier
"""
UPSERT_CURRENT_CONSENT = """
INSERT INTO current_consents (subject, purpose, event_id, occurred_us, seq, granted, expires_us)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bool[], $7::bigint[])
ON CONFLICT (subject, purpose) DO UPDATE SET
    event_id = EXCLUDED.event_id, occurred_us = EXCLUDED.occurred_us, seq = EXCLUDED.seq,
    granted = EXCLUDED.granted, expires_us = EXCLUDED.expires_us
WHERE (current_consents.occurred_us, current_consents.seq) < (EXCLUDED.occurred_us, EXCLUDED.seq)
"""
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
UPSERT_VIOLATION = """
INSERT INTO violations (event_id, rule, subject, severity, clause, explanation, status,
                        occurred_us, detected_at, updated_at)
SELECT event_id, rule, subject, severity, clause, explanation, status, occurred_us, $9, $9
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::bigint[]) AS change(event_id, rule, subject, severity, clause, explanation, status, occurred_us)
ON CONFLICT (event_id, rule) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at
"""
ADVANCE_POSITION = """
UPDATE consumer_positions SET next_offset = $3, accepted = accepted + $4,
    duplicates = duplicates + $5, rejected = rejected + $6,
    batches = batches + 1, batch_seconds = batch_seconds + $7, updated_at = now()
WHERE topic = $1 AND kafka_partition = $2
"""
LEDGER_COLUMNS = (
    "seq", "event_id", "subject", "type", "occurred_us", "recorded_at", "recorded_us",
    "kafka_partition", "kafka_offset", "digest", "payload", "payload_sha256", "leaf_index", "leaf_hash",
)  # fmt: skip
CONSENT_COLUMNS = (
    "event_id", "subject", "purpose", "occurred_us", "seq", "granted", "expires_us",
    "controller", "channel",
)  # fmt: skip
DISCLOSURE_COLUMNS = (
    "event_id", "subject", "purpose", "occurred_us", "seq", "subject_role", "controller",
    "recipient_kind", "recipient_id", "data_categories", "legal_basis_kind", "legal_basis_reference",
)  # fmt: skip
REJECTED_COLUMNS = (
    "kafka_partition", "kafka_offset", "reason", "detail", "event_id", "subject", "raw", "recorded_at",
)  # fmt: skip
OUTBOX_COLUMNS = ("topic", "key", "value", "headers", "subject")


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
    stages_ms: dict[str, float] = field(default_factory=dict)  # where the time went
    outcome: BatchOutcome | None = None  # what was decided, record by record


class BatchPipeline:
    """Turns batches of records into committed ledger rows; one per worker process."""

    def __init__(
        self, pool: asyncpg.Pool, keyring: KeyRing, policy: Policy, settings: Settings
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._policy = policy
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
            positions = {
                row["kafka_partition"]: row["next_offset"]
                for row in await connection.fetch(LOCK_POSITIONS, topic, partitions)
            }
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
        digests = {
            row["event_id"]: row["digest"]
            for row in await connection.fetch(ACCEPTED_DIGESTS, needs.ids)
        }
        files = await load_subject_files(connection, needs)
        erased_before = {subject for subject, file in files.items() if file.erased_at is not None}
        sequence = iter([row[0] for row in await connection.fetch(RESERVE_SEQ, len(needs.ids))])
        report.stages_ms["load"] = _ms_since(stage)
        stage = time.perf_counter()
        outcome = settle_batch(checked, digests, files, self._policy, sequence)
        report.stages_ms["settle"] = _ms_since(stage)
        stage = time.perf_counter()
        now = datetime.now(UTC)
        forgotten = erased_before | set(outcome.erased)
        await self._write_entries(connection, outcome.accepted, forgotten, now)
        await self._write_facts(connection, outcome, forgotten)
        await self._write_violations(connection, outcome.changes, now, forgotten)
        await self._write_rejected(connection, outcome, now)
        if outcome.erased:
            await self._forget(connection, list(outcome.erased))
        report.stages_ms["write"] = _ms_since(stage)
        await self._advance_positions(connection, checked, outcome, time.perf_counter() - started)
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

    async def _subject_keys(
        self, connection: asyncpg.Connection, accepted: list[Accepted], forgotten: set[str]
    ) -> dict[str, bytes]:
        """Data keys of the batch's subjects, creating keys for new subjects.

        Subjects erased before this batch get a throwaway key that is never
        stored: what arrives for them is unreadable from the start.
        """
        subjects = list({item.event.subject for item in accepted})
        keys: dict[str, bytes] = {}
        for row in await connection.fetch(SUBJECT_KEYS, subjects):
            keys[row["subject"]] = self._keyring.unwrap(row["subject"], row["wrapped_key"])
        new_rows = []
        for subject in subjects:
            if subject in keys:
                continue
            if subject in forgotten:
                keys[subject] = new_subject_key()  # never stored
                continue
            key, wrapped = self._keyring.new_key(subject)
            keys[subject] = key
            new_rows.append((subject, wrapped))
        if new_rows:
            await connection.execute(INSERT_KEYS, *as_columns(new_rows, 2))
        return keys

    async def _write_entries(
        self,
        connection: asyncpg.Connection,
        accepted: list[Accepted],
        forgotten: set[str],
        now: datetime,
    ) -> None:
        if not accepted:
            return
        if not self._settings.integrity:
            await self._write_entries_without_integrity(connection, accepted, now)
            return
        keys = await self._subject_keys(connection, accepted, forgotten)
        partitions = sorted({item.record.partition for item in accepted})
        frontiers = {
            row["kafka_partition"]: MerkleFrontier.from_bytes(row["frontier"])
            for row in await connection.fetch(LOCK_LOGS, partitions)
        }
        recorded_us = to_micros(now)
        sealers = {subject: SubjectSealer(key, subject) for subject, key in keys.items()}
        rows = []
        for record, event, fact, digest in accepted:
            payload = sealers[event.subject].seal(event.id, compact_json(event.body))
            payload_sha256 = _sha256(payload)
            frontier = frontiers.setdefault(record.partition, MerkleFrontier())
            leaf = leaf_hash(
                encode_entry(event.id, record.partition, record.offset, now, payload_sha256)
            )
            index = frontier.append(leaf)
            rows.append((
                fact.seq, event.id, event.subject, event.type, event.instant, now, recorded_us,
                record.partition, record.offset, digest, payload, payload_sha256, index, leaf,
            ))  # fmt: skip
        await connection.copy_records_to_table(
            "ledger_entries", records=rows, columns=LEDGER_COLUMNS
        )
        await connection.executemany(
            UPSERT_LOG,
            [
                (partition, frontier.size, frontier.to_bytes())
                for partition, frontier in frontiers.items()
            ],
        )

    async def _write_entries_without_integrity(
        self, connection: asyncpg.Connection, accepted: list[Accepted], now: datetime
    ) -> None:
        """Benchmarks only (``LEDGER_INTEGRITY=false``): the same rows with the payload
        in clear and no digests or Merkle leaves, to measure what integrity costs."""
        recorded_us = to_micros(now)
        sizes = dict(
            await connection.fetch(LOG_SIZES, sorted({a.record.partition for a in accepted}))
        )
        rows = []
        for record, event, fact, digest in accepted:
            index = sizes.get(record.partition, 0)
            sizes[record.partition] = index + 1
            rows.append((
                fact.seq, event.id, event.subject, event.type, event.instant, now, recorded_us,
                record.partition, record.offset, digest, compact_json(event.body), b"", index, b"",
            ))  # fmt: skip
        await connection.copy_records_to_table(
            "ledger_entries", records=rows, columns=LEDGER_COLUMNS
        )
        await connection.executemany(
            UPSERT_LOG,
            [(partition, size, MerkleFrontier().to_bytes()) for partition, size in sizes.items()],
        )

    async def _write_facts(
        self, connection: asyncpg.Connection, outcome: BatchOutcome, forgotten: set[str]
    ) -> None:
        consents: list[tuple[Any, ...]] = []
        disclosures: list[tuple[Any, ...]] = []
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
                disclosures.append((
                    fact.event_id, fact.subject, fact.purpose, fact.instant, fact.seq, fact.role,
                    data["controller"], fact.recipient_kind, fact.recipient_id, list(fact.data_categories),
                    fact.legal_basis_kind, fact.legal_basis_reference,
                ))  # fmt: skip
        if consents:
            await connection.copy_records_to_table(
                "consent_changes", records=consents, columns=CONSENT_COLUMNS
            )
            rows = [
                (c.subject, c.purpose, c.event_id, c.instant, c.seq, c.granted, c.expires_at)
                for c in latest.values()
            ]
            await connection.execute(UPSERT_CURRENT_CONSENT, *as_columns(rows, 7))
        if disclosures:
            await connection.copy_records_to_table(
                "disclosures", records=disclosures, columns=DISCLOSURE_COLUMNS
            )
        if outcome.erased:
            now = datetime.now(UTC)
            await connection.executemany(
                UPSERT_ERASURE,
                [
                    (subject, fact.event_id, fact.instant, now)
                    for subject, fact in outcome.erased.items()
                ],
            )

    async def _forget(self, connection: asyncpg.Connection, erased: list[str]) -> None:
        """Remove what the ledger keeps in clear of subjects erased by this batch."""
        for statement in FORGET_SUBJECTS:
            await connection.execute(statement, erased)
        await connection.execute(SCRUB_EXPLANATIONS, erased, ERASED_EXPLANATION)
        drop_copies, scrub_alerts = SCRUB_OUTBOX
        await connection.execute(drop_copies, erased, self._settings.violations_topic)
        await connection.execute(
            scrub_alerts, erased, self._settings.violations_topic, ERASED_EXPLANATION
        )

    async def _write_violations(
        self,
        connection: asyncpg.Connection,
        changes: list[ViolationChange],
        now: datetime,
        forgotten: set[str],
    ) -> None:
        if not changes:
            return
        changes = [
            ViolationChange(
                change.status, change.violation._replace(explanation=ERASED_EXPLANATION)
            )
            if change.violation.subject in forgotten
            else change
            for change in changes
        ]
        final = {change.violation.key: change for change in changes}  # one row per violation
        rows = [
            (v.event_id, v.rule.value, v.subject, v.severity.value, v.clause, v.explanation,
             change.status.value, v.occurred_at)
            for change in final.values()
            for v in (change.violation,)
        ]  # fmt: skip
        await connection.execute(UPSERT_VIOLATION, *as_columns(rows, 8), now)
        topic = self._settings.violations_topic
        alerts = [
            (topic, v.event_id.encode(), alert_message(change, now), "[]", v.subject)
            for change in changes
            for v in (change.violation,)
        ]
        await connection.copy_records_to_table("outbox", records=alerts, columns=OUTBOX_COLUMNS)

    async def _write_rejected(
        self, connection: asyncpg.Connection, outcome: BatchOutcome, now: datetime
    ) -> None:
        if not outcome.rejected:
            return
        rows = []
        copies = []
        subjects = [subject_named_in(record.value) for record, _ in outcome.rejected]
        erased = {
            row["subject"] for row in await connection.fetch(ERASURES, [s for s in subjects if s])
        }
        for (record, rejection), subject in zip(outcome.rejected, subjects, strict=True):
            if subject in erased:  # the raw record may hold personal data of a forgotten subject
                rows.append((
                    record.partition, record.offset, rejection.reason.value, "erased",
                    rejection.event_id, subject, b"", now,
                ))  # fmt: skip
                continue
            rows.append((
                record.partition, record.offset, rejection.reason.value, rejection.detail,
                rejection.event_id, subject, record.value, now,
            ))  # fmt: skip
            headers = [
                ["reason", rejection.reason.value],
                ["detail", rejection.detail],
                ["source_partition", str(record.partition)],
                ["source_offset", str(record.offset)],
            ]
            copies.append((
                self._settings.rejected_topic, subject.encode() if subject else None, record.value,
                orjson.dumps(headers).decode(), subject,
            ))  # fmt: skip
        await connection.copy_records_to_table(
            "rejected_events", records=rows, columns=REJECTED_COLUMNS
        )
        await connection.copy_records_to_table("outbox", records=copies, columns=OUTBOX_COLUMNS)

    async def _advance_positions(
        self,
        connection: asyncpg.Connection,
        checked: list[Checked],
        outcome: BatchOutcome,
        elapsed: float,
    ) -> None:
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
        await connection.executemany(
            ADVANCE_POSITION,
            [
                (self._settings.events_topic, partition, offset, *counts[partition], elapsed)
                for partition, offset in next_offset.items()
            ],
        )


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
