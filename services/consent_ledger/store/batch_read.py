"""Lock a batch's partitions, then read what the ledger knows of it in one statement.

A batch needs the digests of its event ids, its subjects' files (consent
timelines, disclosures that may be re-judged, erasures, open violations), its
subjects' data keys, its partitions' Merkle frontiers and a run of ingest
sequence numbers. Each is an ``ARRAY(...)`` of rows in one ``SELECT``: one
round trip instead of eight. On two shared cores a round trip to PostgreSQL
costs far more than the rows it carries (measured: a batch of three records
took 15 ms, nearly all of it waiting on its two dozen statements).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from consent_ledger.core.batch import BatchNeeds
from consent_ledger.core.facts import ConsentChange, Disclosure
from consent_ledger.core.timeline import SubjectFile, Violation
from consent_ledger.core.verdicts import Rule, Severity
from consent_ledger.store.sql import as_columns

# Creates missing rows and locks them all, in partition order, in one statement:
# the no-op update takes the row lock and returns the stored position. Its own
# statement: what the batch reads next must be read after the lock is held.
LOCK_POSITIONS = """
INSERT INTO consumer_positions (topic, kafka_partition, next_offset)
SELECT $1, p, 0 FROM unnest($2::int[]) AS p ORDER BY p
ON CONFLICT (topic, kafka_partition) DO UPDATE SET next_offset = consumer_positions.next_offset
RETURNING kafka_partition, next_offset
"""

# Each lookup takes the batch's keys one by one through the index, in a
# LATERAL subquery that `OFFSET 0` keeps the planner from flattening into a
# join. A join lets the planner pick a hash join over the whole table when
# its statistics are stale, as they are on tables growing by thousands of rows
# a second between autovacuum's analyses: measured, the open-violations lookup
# then read every open violation for every batch, and a batch's load grew
# from 15 to 60 ms within 40,000 events.
#
# A disclosure can match two keys of the batch (one purpose, and an erasure's
# "any purpose"); the loader keeps it once. The Merkle logs are locked as the
# batch's partition positions are (the caller took those first): only the
# holder of a partition's position appends to its log.
BATCH_STATE = """
SELECT
    ARRAY(
        SELECT ROW(e.event_id, e.digest) FROM unnest($1::text[]) AS batch(event_id)
        CROSS JOIN LATERAL (
            SELECT event_id, digest FROM ledger_entries WHERE event_id = batch.event_id OFFSET 0
        ) e
    ) AS digests,
    ARRAY(
        SELECT ROW(c.event_id, c.subject, c.occurred_us, c.seq, c.purpose, c.granted, c.expires_us)
        FROM unnest($2::text[], $3::text[]) AS batch(subject, purpose)
        CROSS JOIN LATERAL (
            SELECT * FROM consent_changes
            WHERE subject = batch.subject AND purpose = batch.purpose OFFSET 0
        ) c
        ORDER BY c.subject, c.purpose, c.occurred_us, c.seq
    ) AS consents,
    ARRAY(
        SELECT ROW(d.event_id, d.subject, d.occurred_us, d.seq, d.purpose, d.subject_role,
                   d.recipient_kind, d.recipient_id, d.data_categories, d.legal_basis_kind,
                   d.legal_basis_reference)
        FROM unnest($4::text[], $5::text[], $6::bigint[]) AS batch(subject, purpose, since)
        CROSS JOIN LATERAL (
            SELECT * FROM disclosures
            WHERE subject = batch.subject AND occurred_us >= batch.since
              AND (batch.purpose IS NULL OR purpose = batch.purpose)
            OFFSET 0
        ) d
        ORDER BY d.seq
    ) AS disclosures,
    ARRAY(
        SELECT ROW(e.subject, e.erased_us) FROM unnest($7::text[]) AS batch(subject)
        CROSS JOIN LATERAL (
            SELECT subject, erased_us FROM erasures WHERE subject = batch.subject OFFSET 0
        ) e
    ) AS erasures,
    ARRAY(
        SELECT ROW(v.event_id, v.rule, v.subject, v.severity, v.clause, v.explanation, v.occurred_us,
                   v.policy_version)
        FROM unnest($8::text[]) AS batch(subject)
        CROSS JOIN LATERAL (
            SELECT * FROM violations WHERE subject = batch.subject AND status = 'open' OFFSET 0
        ) v
    ) AS open_violations,
    ARRAY(
        SELECT ROW(k.subject, k.wrapped_key) FROM unnest($9::text[]) AS batch(subject)
        CROSS JOIN LATERAL (
            SELECT subject, wrapped_key FROM subject_keys WHERE subject = batch.subject OFFSET 0
        ) k
    ) AS subject_keys,
    ARRAY(
        SELECT ROW(kafka_partition, size, frontier) FROM merkle_logs
        WHERE kafka_partition = ANY($10::int[]) FOR UPDATE
    ) AS logs,
    ARRAY(SELECT nextval('ledger_seq') FROM generate_series(1, $11)) AS sequence,
    (SELECT revision FROM policy_revision FOR SHARE) AS policy_revision
"""


async def lock_positions(
    connection: asyncpg.Connection, topic: str, partitions: list[int]
) -> dict[int, int]:
    """Lock the positions of ``topic``'s ``partitions`` until the transaction ends
    (two workers briefly owning a partition during a rebalance serialise here) and
    return each one's next offset to read; a partition new to the ledger starts at 0."""
    return dict(await connection.fetch(LOCK_POSITIONS, topic, sorted(partitions)))


@dataclass(slots=True)
class BatchState:
    """What the ledger held for a batch when its transaction read it."""

    digests: dict[str, bytes] = field(default_factory=dict)  # accepted ids: content digests
    files: dict[str, SubjectFile] = field(default_factory=dict)  # known subjects only
    erased: set[str] = field(default_factory=set)  # of the subjects asked about
    wrapped_keys: dict[str, bytes] = field(default_factory=dict)  # subject: wrapped data key
    logs: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # partition: size, frontier
    sequence: list[int] = field(default_factory=list)  # ingest order numbers, one per id
    # The published policy set's revision, held FOR SHARE until the batch commits
    # (store/policy_versions.py): a publication waits for the batch, or the batch for it.
    policy_revision: int = 0


async def load_batch_state(
    connection: asyncpg.Connection,
    needs: BatchNeeds,
    partitions: list[int],
    also_erased: list[str],
) -> BatchState:
    """What the ledger knows of the batch, as far as ``needs`` says it is needed;
    ``also_erased`` names more subjects (of rejected records) whose erasure to
    look up."""
    timelines = as_columns(needs.timelines, 2)
    rejudge = as_columns(needs.rejudge_from, 3)
    erasure_subjects = list(dict.fromkeys(needs.subjects + also_erased))
    row = await connection.fetchrow(
        BATCH_STATE, needs.ids, *timelines, *rejudge, erasure_subjects, needs.rejudged,
        needs.subjects, partitions, len(needs.ids),
    )  # fmt: skip
    state = BatchState(
        digests=dict(row["digests"]),
        erased={subject for subject, _ in row["erasures"]},
        wrapped_keys=dict(row["subject_keys"]),
        logs={partition: (size, frontier) for partition, size, frontier in row["logs"]},
        sequence=list(row["sequence"]),
        policy_revision=row["policy_revision"],
    )
    files = state.files

    def file_of(subject: str) -> SubjectFile:
        found = files.get(subject)
        if found is None:
            found = files[subject] = SubjectFile(subject)
        return found

    for event_id, subject, occurred_us, seq, purpose, granted, expires_us in row["consents"]:
        change = ConsentChange(event_id, subject, occurred_us, seq, purpose, granted, expires_us)
        file_of(subject).consents.setdefault(purpose, []).append(change)
    loaded: set[str] = set()
    for (event_id, subject, occurred_us, seq, purpose, role, recipient_kind, recipient_id,
         categories, basis_kind, basis_reference) in row["disclosures"]:  # fmt: skip
        if event_id in loaded:
            continue
        loaded.add(event_id)
        shared = Disclosure(
            event_id, subject, occurred_us, seq, purpose, role, recipient_kind, recipient_id,
            tuple(categories), basis_kind, basis_reference,
        )  # fmt: skip
        file_of(shared.subject).disclosures.setdefault(shared.purpose, []).append(shared)
    batch_subjects = set(needs.subjects)
    for subject, erased_us in row["erasures"]:
        if subject in batch_subjects:
            file_of(subject).erased_at = erased_us
    for (event_id, rule, subject, severity, clause, explanation, occurred_us,
         policy_version) in row["open_violations"]:  # fmt: skip
        violation = Violation(
            event_id, Rule(rule), subject, Severity(severity), clause, explanation, occurred_us,
            policy_version,
        )  # fmt: skip
        file_of(subject).open.setdefault(event_id, {})[violation.rule] = violation
    return state
