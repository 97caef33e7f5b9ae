"""Write one settled batch: every row it produced, in one statement.

:meth:`BatchWriter.write` takes what the core decided for a batch
(:class:`SettledBatch`) inside the caller's transaction and writes it: ledger
entries (sealed payloads, Merkle leaves), new subject keys, the grown Merkle
logs, facts, the current-consent projection, violations, outbox messages
(alerts, rejected copies), rejected records, and the new partition positions
and counts. A large batch sends its ledger entries by COPY first; erasures,
which are rare, take a few statements of their own.

Each row type below is a named tuple whose fields are its table's columns in
table order: the write statement feeds each table from one array of the
table's own row type (``unnest($n::table[])``), which asyncpg encodes from
tuples in column order.

Size: about 620 lines of one concept: the batch's write statement and a
named row shape per table it fills, kept beside the statement they match
column by column.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import asyncpg
import orjson

from consent_ledger.core.batch import (
    BatchOutcome,
    Checked,
    Record,
    key_subject,
    subject_of_rejected,
)
from consent_ledger.core.facts import ConsentChange, Disclosure
from consent_ledger.core.intake import Rejection, compact_json
from consent_ledger.core.timeline import Status, Violation, ViolationChange
from consent_ledger.core.timestamps import format_micros, to_micros
from consent_ledger.integrity.entry import encode_entry
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.integrity.merkle import MerkleFrontier, leaf_hash
from consent_ledger.integrity.shredding import SubjectSealer, new_subject_key
from consent_ledger.store.batch_read import BatchState
from consent_ledger.store.sql import as_columns


class SubjectKeyRow(NamedTuple):
    subject: str
    wrapped_key: bytes


class LedgerEntryRow(NamedTuple):
    seq: int
    event_id: str
    subject: str
    type: str
    occurred_us: int
    recorded_at: datetime
    recorded_us: int
    kafka_partition: int
    kafka_offset: int
    digest: bytes
    payload: bytes
    payload_sha256: bytes
    leaf_index: int
    leaf_hash: bytes


class MerkleLogRow(NamedTuple):
    kafka_partition: int
    size: int
    frontier: bytes


class ConsentChangeRow(NamedTuple):
    event_id: str
    subject: str
    purpose: str
    occurred_us: int
    seq: int
    granted: bool
    expires_us: int | None
    controller: str
    channel: str | None


class CurrentConsentRow(NamedTuple):
    subject: str
    purpose: str
    event_id: str
    occurred_us: int
    seq: int
    granted: bool
    expires_us: int | None


class DisclosureRow(NamedTuple):
    event_id: str
    subject: str
    purpose: str
    occurred_us: int
    seq: int
    subject_role: str
    controller: str
    recipient_kind: str
    recipient_id: str
    data_categories: list[str]
    legal_basis_kind: str | None
    legal_basis_reference: str | None


class ViolationRow(NamedTuple):
    id: int | None  # the table's serial: the batch's statement leaves it out
    event_id: str
    rule: str
    subject: str
    severity: str
    clause: str
    explanation: str
    status: str
    occurred_us: int
    detected_at: datetime
    updated_at: datetime
    policy_version: str | None  # the version in force at the event's time


class OutboxRow(NamedTuple):
    id: None  # the table's serial: the statement leaves it out
    topic: str
    key: bytes | None
    value: bytes
    headers: str  # JSON: [[name, value], ...]
    subject: str | None  # whose data it carries: erasure scrubs it
    created_at: None  # the table's default: the statement leaves it out


class RejectedRow(NamedTuple):
    id: None  # the table's serial: the statement leaves it out
    kafka_partition: int
    kafka_offset: int
    reason: str
    detail: str
    event_id: str | None
    subject: str | None
    raw: bytes
    recorded_at: datetime
    key_subject: str | None  # the subject the Kafka key names: erasure scrubs by it too


class PositionRow(NamedTuple):
    """A partition's next offset to read, and the counts the batch adds to it."""

    kafka_partition: int
    next_offset: int
    accepted: int
    duplicates: int
    rejected: int


# Everything a batch writes, one data-modifying CTE per table, each fed by one
# array of the table's own row type (empty arrays insert nothing). Row arrays
# rather than an array per column: asyncpg checks each element of an array
# parameter with isinstance() against collections.abc, three checks per row
# instead of one or two per value (measured: 29 µs per event as column
# arrays). Outbox rows keep the order of their array, so alerts are relayed in
# the order decided.
# What a violation already stored takes from a later change of it (the rest,
# explanation included, stays as first written). `rebuild` merges its rows so.
# A violation opened again after a retraction names the policy version that
# judged it this time.
VIOLATION_RESTATED = ("status", "updated_at", "policy_version")
_RESTATE_VIOLATION = ", ".join(f"{name} = EXCLUDED.{name}" for name in VIOLATION_RESTATED)
WRITE_BATCH = f"""
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
    ON CONFLICT (event_id, rule) DO UPDATE SET {_RESTATE_VIOLATION}
), messages AS (
    INSERT INTO outbox (topic, key, value, headers, subject)
    SELECT topic, key, value, headers, subject FROM unnest($8::outbox[])
), refused AS (
    INSERT INTO rejected_events (kafka_partition, kafka_offset, reason, detail, event_id, subject,
                                 raw, recorded_at, key_subject)
    SELECT kafka_partition, kafka_offset, reason, detail, event_id, subject, raw, recorded_at,
           key_subject
    FROM unnest($9::rejected_events[])
)
UPDATE consumer_positions AS position SET
    next_offset = p.next_offset, accepted = position.accepted + p.accepted,
    duplicates = position.duplicates + p.duplicates, rejected = position.rejected + p.rejected,
    batches = position.batches + 1, batch_seconds = position.batch_seconds + $11,
    batch_seconds_buckets[$17] = position.batch_seconds_buckets[$17] + 1,
    updated_at = now()
FROM unnest($12::int[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[])
    AS p(kafka_partition, next_offset, accepted, duplicates, rejected)
WHERE position.topic = $10 AND position.kafka_partition = p.kafka_partition
"""  # noqa: S608 (fixed column names)
# What a step of re-judging after a policy publication writes: the violations it
# opened, retracted or relabelled (now judged under another version), and the
# alerts of those opened and retracted.
WRITE_REJUDGED = f"""
WITH judged AS (
    INSERT INTO violations (event_id, rule, subject, severity, clause, explanation, status,
                            occurred_us, detected_at, updated_at, policy_version)
    SELECT event_id, rule, subject, severity, clause, explanation, status, occurred_us,
           detected_at, updated_at, policy_version
    FROM unnest($1::violations[])
    ON CONFLICT (event_id, rule) DO UPDATE SET {_RESTATE_VIOLATION}
)
INSERT INTO outbox (topic, key, value, headers, subject)
SELECT topic, key, value, headers, subject FROM unnest($2::outbox[])
"""  # noqa: S608 (fixed column names)
# A large batch's ledger rows go by COPY, two round trips more, cheaper per row
# than the write statement's unnest() (COPY encodes each value by its column's
# codec, with no per-row checks).
COPY_ENTRIES_FROM = 200
# The upper bounds (seconds) of the batch latency histogram kept per partition
# (consumer_positions.batch_seconds_buckets, one slot per bound and one for
# longer batches; /metrics shows them as consent_ledger_batch_duration_seconds).
# Fixed: the stored counts are only meaningful against these bounds.
BATCH_SECONDS_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
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
    # By the subject the record names or the one its Kafka key names (CONTRACT §2).
    """UPDATE rejected_events SET raw = '', detail = 'erased'
       WHERE subject = ANY($1::text[]) OR key_subject = ANY($1::text[])""",
    # Copies the broker refused for good are kept as dead letters: the same holds.
    "DELETE FROM outbox_dead WHERE (subject = ANY($1::text[]) OR key = ANY($2::bytea[]))"
    " AND topic <> $3",
)
SCRUB_EXPLANATIONS = "UPDATE violations SET explanation = $2 WHERE subject = ANY($1::text[])"
# Alerts queued for webhooks (and those sent, kept as the record) likewise.
SCRUB_WEBHOOK_BODIES = """UPDATE webhook_deliveries SET body = convert_to(
    jsonb_set(convert_from(body, 'UTF8')::jsonb, '{violation,explanation}', to_jsonb($2::text))::text,
    'UTF8') WHERE subject = ANY($1::text[])"""
SCRUB_OUTBOX = (
    # Copies of rejected records not yet relayed carry raw personal data: drop them
    # (a copy keeps its record's Kafka key, which may name the subject).
    "DELETE FROM outbox WHERE (subject = ANY($1::text[]) OR key = ANY($3::bytea[])) AND topic <> $2",
    # Alerts not yet relayed (or refused for good) go out or stay without the details.
    """UPDATE outbox SET value = convert_to(
        jsonb_set(convert_from(value, 'UTF8')::jsonb, '{violation,explanation}', to_jsonb($3::text))::text,
        'UTF8') WHERE subject = ANY($1::text[]) AND topic = $2""",
    """UPDATE outbox_dead SET value = convert_to(
        jsonb_set(convert_from(value, 'UTF8')::jsonb, '{violation,explanation}', to_jsonb($3::text))::text,
        'UTF8') WHERE subject = ANY($1::text[]) AND topic = $2""",
)
# What a copy of a rejected record to ledger.rejected may carry besides its raw
# bytes (key, headers, the record batch's own framing): the raw copy is cut to
# the producer's maximum request size less this, so that every copy fits.
COPY_ALLOWANCE = 8_192
COPY_MAX_KEY_BYTES = 1_024
COPY_MAX_DETAIL_CHARS = 1_024


@dataclass(frozen=True, slots=True)
class SettledBatch:
    """What the core decided for a batch, with what the ledger held before it."""

    checked: Sequence[Checked]  # the records not committed before, in offset order
    state: BatchState  # what the batch's read found
    outcome: BatchOutcome  # what settle_batch decided
    started: float  # time.perf_counter() when the batch began, for its recorded duration


@dataclass(frozen=True, slots=True)
class BatchTopics:
    """The topics a batch's rows name."""

    events: str  # whose partition positions the batch advances
    violations: str  # alerts
    rejected: str  # copies of rejected records
    max_message_bytes: int = 1_048_576  # the relay's producer's max request size


class BatchWriter:
    """Writes settled batches; one per worker process.

    ``integrity=False`` is for benchmarks only (``LEDGER_INTEGRITY=false``): the
    payload in clear, no digests or Merkle leaves, to measure what integrity costs.
    """

    def __init__(self, keyring: KeyRing, topics: BatchTopics, *, integrity: bool = True) -> None:
        self.keyring = keyring
        self._keyring = keyring
        self._topics = topics
        self._integrity = integrity

    async def write(self, connection: asyncpg.Connection, batch: SettledBatch) -> int:
        """Write every row of ``batch`` in the caller's transaction; return how many
        outbox messages it wrote (the relay has work when not zero)."""
        outcome, state = batch.outcome, batch.state
        now = datetime.now(UTC)
        # Settling recorded the batch's erasures in the subject files: a file with an
        # erasure is a subject erased before the batch or by it.
        forgotten = {subject for subject, file in state.files.items() if file.erased_at is not None}
        if self._integrity:
            entries, new_keys, logs = self._entries(state, outcome, forgotten, now)
        else:
            entries, new_keys, logs = _entries_without_integrity(state, outcome, now)
        consents, current, shared = fact_rows(outcome, forgotten)
        violations, alerts = self._violations(outcome.changes, forgotten, now)
        rejected, copies = self._rejected(outcome, state.erased | set(outcome.erased), now)
        positions = _positions(batch.checked, outcome)
        if len(entries) >= COPY_ENTRIES_FROM:
            await connection.copy_records_to_table("ledger_entries", records=entries)
            entries = []
        elapsed = time.perf_counter() - batch.started
        await connection.execute(
            WRITE_BATCH, new_keys, entries, logs, consents, current, shared, violations,
            alerts + copies, rejected, self._topics.events, elapsed,
            *as_columns(positions, len(PositionRow._fields)), latency_slot(elapsed),
        )  # fmt: skip
        if outcome.erased:
            await self._forget(connection, outcome)
        return len(alerts) + len(copies)

    def _entries(
        self, state: BatchState, outcome: BatchOutcome, forgotten: set[str], now: datetime
    ) -> tuple[list[LedgerEntryRow], list[SubjectKeyRow], list[MerkleLogRow]]:
        """Ledger rows of the accepted events (sealed payloads, Merkle leaves), the
        data keys of new subjects, and the grown Merkle logs."""
        recorded_us = to_micros(now)
        keys, new_keys = self._subject_keys(state, outcome, forgotten)
        frontiers: dict[int, MerkleFrontier] = {}
        sealers = {subject: SubjectSealer(key, subject) for subject, key in keys.items()}
        rows = []
        for record, event, fact, digest in outcome.accepted:
            payload = sealers[event.subject].seal(event.id, compact_json(event.body))
            payload_sha256 = hashlib.sha256(payload).digest()
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
            rows.append(LedgerEntryRow(
                fact.seq, event.id, event.subject, event.type, event.instant, now, recorded_us,
                record.partition, record.offset, digest, payload, payload_sha256, index, leaf,
            ))  # fmt: skip
        logs = [
            MerkleLogRow(partition, tree.size, tree.to_bytes())
            for partition, tree in frontiers.items()
        ]
        return rows, new_keys, logs

    def _subject_keys(
        self, state: BatchState, outcome: BatchOutcome, forgotten: set[str]
    ) -> tuple[dict[str, bytes], list[SubjectKeyRow]]:
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
                new_keys.append(SubjectKeyRow(subject, wrapped))
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
        keys = [subject.encode() for subject in erased]
        violations_topic = self._topics.violations
        *forget, drop_dead_copies = FORGET_SUBJECTS
        for statement in forget:
            await connection.execute(statement, erased)
        await connection.execute(drop_dead_copies, erased, keys, violations_topic)
        await connection.execute(SCRUB_EXPLANATIONS, erased, ERASED_EXPLANATION)
        await connection.execute(SCRUB_WEBHOOK_BODIES, erased, ERASED_EXPLANATION)
        drop_copies, *scrub_alerts = SCRUB_OUTBOX
        await connection.execute(drop_copies, erased, violations_topic, keys)
        for statement in scrub_alerts:
            await connection.execute(statement, erased, violations_topic, ERASED_EXPLANATION)

    async def write_rejudged(
        self,
        connection: asyncpg.Connection,
        changes: list[ViolationChange],
        relabelled: list[Violation],
        at: datetime,
    ) -> int:
        """Write what re-judging after a publication changed, stamped ``at`` (the
        publication's time), in the caller's transaction; return how many alerts
        it wrote."""
        now = at
        rows, alerts = self._violations(changes, set(), now)
        changed = {row[1:3] for row in rows}
        rows.extend(
            ViolationRow(
                None, v.event_id, v.rule.value, v.subject, v.severity.value, v.clause,
                v.explanation, Status.OPEN.value, v.occurred_at, now, now, v.policy_version,
            )
            for v in relabelled
            if (v.event_id, v.rule.value) not in changed
        )  # fmt: skip
        if rows:
            await connection.execute(WRITE_REJUDGED, rows, alerts)
        return len(alerts)

    def _violations(
        self, changes: list[ViolationChange], forgotten: set[str], now: datetime
    ) -> tuple[list[ViolationRow], list[OutboxRow]]:
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
        rows = violation_rows(changes, now)
        topic = self._topics.violations
        alerts = [
            OutboxRow(
                None, topic, v.event_id.encode(), alert_message(change, now), "[]", v.subject, None
            )
            for change in changes
            for v in (change.violation,)
        ]
        return rows, alerts

    def _rejected(
        self, outcome: BatchOutcome, erased: set[str], now: datetime
    ) -> tuple[list[RejectedRow], list[OutboxRow]]:
        """Rows of the rejected records, and their copies for ``ledger.rejected``;
        a record whose value or Kafka key names an erased subject is kept without
        its bytes, and not copied."""
        rows: list[RejectedRow] = []
        copies: list[OutboxRow] = []
        for record, rejection in outcome.rejected:
            subject = subject_of_rejected(record)
            by_key = key_subject(record.key)
            if (
                subject in erased or by_key in erased
            ):  # the raw record may hold a forgotten subject's data
                rows.append(RejectedRow(
                    None, record.partition, record.offset, rejection.reason.value, "erased",
                    rejection.event_id, subject, b"", now, by_key,
                ))  # fmt: skip
                continue
            rows.append(RejectedRow(
                None, record.partition, record.offset, rejection.reason.value, rejection.detail,
                rejection.event_id, subject, record.value, now, by_key,
            ))  # fmt: skip
            copies.append(self._copy(record, rejection, subject))
        return rows, copies

    def _copy(self, record: Record, rejection: Rejection, subject: str | None) -> OutboxRow:
        """The copy of a rejected record for ``ledger.rejected``, cut to fit the
        producer's maximum request size: a raw copy cut short says so in the
        headers ``raw_truncated`` and ``raw_size`` (its full length), a key left out
        in ``key_size``. The full bytes stay in ``rejected_events``."""
        headers = [
            ["reason", rejection.reason.value],
            ["detail", rejection.detail[:COPY_MAX_DETAIL_CHARS]],
            ["source_partition", str(record.partition)],
            ["source_offset", str(record.offset)],
        ]
        key = record.key if record.key is not None else (subject.encode() if subject else None)
        if key is not None and len(key) > COPY_MAX_KEY_BYTES:
            headers.append(["key_size", str(len(key))])
            key = None
        value = record.value
        room = self._topics.max_message_bytes - COPY_ALLOWANCE
        if len(value) > room:
            headers += [["raw_truncated", "true"], ["raw_size", str(len(value))]]
            value = value[:room]
        return OutboxRow(
            None, self._topics.rejected, key, value, orjson.dumps(headers).decode(), subject, None
        )


def _entries_without_integrity(
    state: BatchState, outcome: BatchOutcome, now: datetime
) -> tuple[list[LedgerEntryRow], list[SubjectKeyRow], list[MerkleLogRow]]:
    """The ledger rows with the payload in clear and no digests or Merkle leaves."""
    recorded_us = to_micros(now)
    sizes: dict[int, int] = {}
    rows = []
    for record, event, fact, digest in outcome.accepted:
        index = sizes.get(record.partition, state.logs.get(record.partition, (0, b""))[0])
        sizes[record.partition] = index + 1
        rows.append(LedgerEntryRow(
            fact.seq, event.id, event.subject, event.type, event.instant, now, recorded_us,
            record.partition, record.offset, digest, compact_json(event.body), b"", index, b"",
        ))  # fmt: skip
    empty = MerkleFrontier().to_bytes()
    return rows, [], [MerkleLogRow(partition, size, empty) for partition, size in sizes.items()]


def violation_rows(changes: list[ViolationChange], now: datetime) -> list[ViolationRow]:
    """One row per violation ``changes`` touch, from its last change, as a batch
    written at ``now`` inserts it (a row already stored takes only what
    VIOLATION_RESTATED names). ``rebuild`` builds its rows with this too."""
    final = {change.violation.key: change for change in changes}
    return [
        ViolationRow(
            None, v.event_id, v.rule.value, v.subject, v.severity.value, v.clause,
            v.explanation, change.status.value, v.occurred_at, now, now, v.policy_version,
        )
        for change in final.values()
        for v in (change.violation,)
    ]  # fmt: skip


def fact_rows(
    outcome: BatchOutcome, forgotten: set[str]
) -> tuple[list[ConsentChangeRow], list[CurrentConsentRow], list[DisclosureRow]]:
    """Rows of the consent changes, of the current consents they move, and of the
    disclosures; none for subjects erased."""
    consents: list[ConsentChangeRow] = []
    shared: list[DisclosureRow] = []
    latest: dict[tuple[str, str], ConsentChange] = {}
    for _, event, fact, _ in outcome.accepted:
        if fact.subject in forgotten:
            continue
        data = event.body["data"]
        if isinstance(fact, ConsentChange):
            consents.append(ConsentChangeRow(
                fact.event_id, fact.subject, fact.purpose, fact.instant, fact.seq, fact.granted,
                fact.expires_at, data["controller"], data.get("channel"),
            ))  # fmt: skip
            key = (fact.subject, fact.purpose)
            current = latest.get(key)
            if current is None or (current.instant, current.seq) < (fact.instant, fact.seq):
                latest[key] = fact
        elif isinstance(fact, Disclosure):
            shared.append(DisclosureRow(
                fact.event_id, fact.subject, fact.purpose, fact.instant, fact.seq, fact.role,
                data["controller"], fact.recipient_kind, fact.recipient_id,
                list(fact.data_categories), fact.legal_basis_kind,
                fact.legal_basis_reference,
            ))  # fmt: skip
    current_rows = [
        CurrentConsentRow(c.subject, c.purpose, c.event_id, c.instant, c.seq, c.granted,
                          c.expires_at)
        for c in latest.values()
    ]  # fmt: skip
    return consents, current_rows, shared


def latency_slot(seconds: float) -> int:
    """The 1-based slot of ``batch_seconds_buckets`` a batch of ``seconds`` counts in:
    that of the least bound at or above it, the last slot when it is above all."""
    return bisect.bisect_left(BATCH_SECONDS_BOUNDS, seconds) + 1


def _positions(checked: Sequence[Checked], outcome: BatchOutcome) -> list[PositionRow]:
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
    return [
        PositionRow(partition, offset, *counts[partition])
        for partition, offset in next_offset.items()
    ]


def alert_message(change: ViolationChange, at: datetime) -> bytes:
    """The JSON message alerting hears on ``ledger.violations``."""
    violation = change.violation
    kind = "ViolationOpened" if change.status is Status.OPEN else "ViolationRetracted"
    at_us = to_micros(at)
    return orjson.dumps({
        "type": kind,
        "id": f"{violation.event_id}/{violation.rule.value}/{change.status.value}/{at_us}",
        "time": format_micros(at_us),
        "violation": violation.to_document() | {"status": change.status.value},
    })  # fmt: skip
