"""Rebuild the read models from the ledger, compare them with the live ones, swap.

The ledger (``ledger_entries``) is the event store. ``consent_changes``,
``disclosures``, ``current_consents``, ``erasures`` and ``violations`` are
projections of it, and the ``accepted`` and ``rejected`` counts of
``consumer_positions`` are counts of it (of ``ledger_entries`` and
``rejected_events`` per partition). :func:`rebuild_read_models` recomputes
them all into temporary tables shaped like the live ones (``rebuilt_<table>``,
dropped at commit), lists every row that differs, and with ``swap`` makes the
live tables equal to the rebuilt ones in the same transaction.

It judges nothing itself. Entries are replayed in ingest order (``seq``)
through the worker's own core, :func:`~consent_ledger.core.batch.settle_batch`
(which records each fact in the subject's ``SubjectFile``), one run of
consecutive entries with the same ``recorded_at`` at a time: the entries one
worker batch wrote share its ``recorded_at``, which is also the
``detected_at``/``updated_at`` of every violation that batch changed. Rows
come from the worker's own builders (``batch_write.fact_rows`` and
``violation_rows``) and are merged as the worker's write statement merges them
(a stored violation takes from a later change only what
``batch_write.VIOLATION_RESTATED`` names; a current consent moves only to a
later change). A subject's events live in one Kafka
partition, whose batches hold its position lock in turn, so within a subject
``seq`` is exactly the order the worker recorded them in, late arrivals and
re-judgements included; across subjects order does not change a verdict.

Erased subjects stay erased: their payloads cannot be opened (the key is
gone), so they are not replayed. Their ``erasures`` row comes from the
ledger's own columns (the earliest ``ErasureRequested`` by event time, ties to
the one ingested first, as the worker keeps it), they have no facts or
current consents, and their violations are carried over from the live table
as they are: the ledger cannot recompute them, so a rebuild neither checks nor
restores them (a backup does: deploy/README.md).

Locking: without ``swap`` the rebuild reads one REPEATABLE READ snapshot and
changes nothing live. With ``swap`` it first takes ``consumer_positions`` in
SHARE ROW EXCLUSIVE mode, which waits for batches in flight and holds off
every later batch (each batch's first statement writes its partition
positions) until the rebuild commits: running workers pause, nothing they
commit is lost or interleaved, and API readers go on reading the old rows
until the commit.

Size: about 530 lines of one concept: the replay, the comparison and the
swap share the shapes of the tables they rebuild.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, NamedTuple

import asyncpg

from consent_ledger.core.batch import Checked, Record, settle_batch
from consent_ledger.core.facts import VisitorRegistration
from consent_ledger.core.intake import ValidEvent, parse_json_object
from consent_ledger.core.policy import Policy, PolicyVersions, as_versions
from consent_ledger.core.timeline import SubjectFile
from consent_ledger.errors import RebuildError
from consent_ledger.integrity.keyring import KeyRing, MasterKeyUnavailable
from consent_ledger.integrity.shredding import KeyUnwrapError, PayloadUnreadable, open_sealed
from consent_ledger.store import row_counts
from consent_ledger.store.batch_write import (
    VIOLATION_RESTATED,
    ConsentChangeRow,
    CurrentConsentRow,
    DisclosureRow,
    ViolationRow,
    fact_rows,
    violation_rows,
)
from consent_ledger.store.policy_versions import (
    POLICY_LOG_PARTITION,
    PublishedVersion,
    published_versions,
)
from consent_ledger.store.row_counts import CountDrift


class ErasureRow(NamedTuple):
    subject: str
    event_id: str
    erased_us: int
    recorded_at: datetime


class ReadModel(NamedTuple):
    """A live table the rebuild recomputes: its key and the columns compared."""

    table: str
    key: tuple[str, ...]
    columns: tuple[str, ...]


# Every column but the violations' serial id, which only orders the listing: a
# rebuilt violation keeps the live row's id, a restored one gets a new id.
READ_MODELS: Final = (
    ReadModel("consent_changes", ("event_id",), ConsentChangeRow._fields),
    ReadModel("disclosures", ("event_id",), DisclosureRow._fields),
    ReadModel("current_consents", ("subject", "purpose"), CurrentConsentRow._fields),
    ReadModel("erasures", ("subject",), ErasureRow._fields),
    ReadModel("violations", ("event_id", "rule"), ViolationRow._fields[1:]),
)
ERASURE_TYPE: Final = "ErasureRequested"

LOCK_OUT_BATCHES: Final = "LOCK TABLE consumer_positions IN SHARE ROW EXCLUSIVE MODE"

ERASED_SUBJECTS: Final = f"""
SELECT DISTINCT subject FROM ledger_entries WHERE type = '{ERASURE_TYPE}'
"""  # noqa: S608 (a constant)

ERASED_ENTRIES: Final = "SELECT count(*) FROM ledger_entries WHERE subject = ANY($1::text[])"

# The earliest erasure by event time, ties to the first ingested: the one the
# worker's upsert keeps. Its recorded_at is the live row's when the live row
# names the same erasure (the worker stamps it a moment after the entry).
REBUILD_ERASURES: Final = f"""
INSERT INTO rebuilt_erasures
SELECT DISTINCT ON (e.subject) e.subject, e.event_id, e.occurred_us,
       coalesce(live.recorded_at, e.recorded_at)
FROM ledger_entries e
LEFT JOIN erasures live ON live.subject = e.subject AND live.event_id = e.event_id
WHERE e.type = '{ERASURE_TYPE}'
ORDER BY e.subject, e.occurred_us, e.seq
"""  # noqa: S608 (a constant)

CARRY_ERASED_VIOLATIONS: Final = """
INSERT INTO rebuilt_violations SELECT * FROM violations WHERE subject = ANY($1::text[])
"""

LIVE_VIOLATION_IDS: Final = "SELECT event_id, rule, id FROM violations"

# Every entry of subjects never erased, in ingest order, with the subject's key;
# the policy log's entries (published policy texts) among them, where they fell.
ENTRIES: Final = """
SELECT e.seq, e.event_id, e.subject, e.type, e.occurred_us, e.recorded_at, e.kafka_partition,
       e.kafka_offset, e.digest, e.payload, e.payload_sha256, k.wrapped_key
FROM ledger_entries e LEFT JOIN subject_keys k ON k.subject = e.subject
WHERE NOT e.subject = ANY($1::text[])
ORDER BY e.seq
"""

# Per partition of the events topic: the counts stored, and what the ledger holds.
COUNTS: Final = """
WITH entries AS (
    SELECT kafka_partition, count(*) AS n FROM ledger_entries WHERE kafka_partition <> $2
    GROUP BY kafka_partition
), refused AS (
    SELECT kafka_partition, count(*) AS n FROM rejected_events GROUP BY kafka_partition
), positions AS (
    SELECT kafka_partition, accepted, rejected FROM consumer_positions WHERE topic = $1
)
SELECT kafka_partition, p.accepted, coalesce(e.n, 0) AS entries,
       p.rejected, coalesce(r.n, 0) AS rejected_rows
FROM positions p FULL JOIN entries e USING (kafka_partition)
FULL JOIN refused r USING (kafka_partition)
ORDER BY kafka_partition
"""

REPAIR_COUNTS: Final = """
UPDATE consumer_positions SET accepted = $3, rejected = $4
WHERE topic = $1 AND kafka_partition = $2
"""

# New ids for restored violations, in the order the replay first wrote them.
NUMBER_RESTORED_VIOLATIONS: Final = """
UPDATE rebuilt_violations r SET id = n.id
FROM (
    SELECT placeholder, nextval('violations_id_seq') AS id
    FROM (SELECT id AS placeholder FROM rebuilt_violations WHERE id < 0
          ORDER BY id DESC OFFSET 0) ordered
) n
WHERE r.id = n.placeholder
"""

RUN_ROWS: Final = 5_000  # fact rows buffered before they are written to the rebuilt tables


def _create_rebuilt(model: ReadModel) -> str:
    return f"CREATE TEMP TABLE rebuilt_{model.table} (LIKE {model.table}) ON COMMIT DROP"


def _insert_rebuilt(model: ReadModel) -> str:
    # The live table's row type: the temporary table has its columns in order.
    return f"INSERT INTO rebuilt_{model.table} SELECT * FROM unnest($1::{model.table}[])"  # noqa: S608 (fixed names)


def _only_in(model: ReadModel, first: str, second: str) -> str:
    columns = ", ".join(model.columns)
    return f"SELECT {columns} FROM {first} EXCEPT SELECT {columns} FROM {second}"  # noqa: S608 (fixed names)


def _key_match(model: ReadModel) -> str:
    keys = ", ".join(model.key)
    arrays = ", ".join(f"${number}::text[]" for number in range(1, len(model.key) + 1))
    return f"({keys}) IN (SELECT * FROM unnest({arrays}))"  # noqa: S608 (fixed names)


def _delete_live(model: ReadModel) -> str:
    return f"DELETE FROM {model.table} WHERE {_key_match(model)}"  # noqa: S608 (fixed names)


def _insert_live(model: ReadModel) -> str:
    return (
        f"INSERT INTO {model.table} SELECT * FROM rebuilt_{model.table} WHERE {_key_match(model)}"  # noqa: S608 (fixed names)
    )


@dataclass(frozen=True, slots=True)
class Difference:
    """A row of a read model that is not what the ledger gives."""

    table: str
    key: tuple[Any, ...]
    live: dict[str, Any] | None  # None: missing from the live table
    rebuilt: dict[str, Any] | None  # None: the ledger gives no such row

    def describe(self) -> str:
        where = f"{self.table} ({', '.join(str(part) for part in self.key)})"
        if self.rebuilt is None:
            return f"{where}: in the live table, not in the ledger's"
        if self.live is None:
            return f"{where}: missing from the live table"
        changed = "; ".join(
            f"{name}: live {self.live[name]!r}, ledger {value!r}"
            for name, value in self.rebuilt.items()
            if self.live.get(name) != value
        )
        return f"{where}: {changed}"


@dataclass(frozen=True, slots=True)
class CountDifference:
    """A partition whose stored counts are not the ledger's."""

    partition: int
    accepted: int | None  # stored (None: no position row)
    entries: int  # accepted events in the ledger
    rejected: int | None
    rejected_rows: int  # rejected records kept

    def describe(self) -> str:
        if self.accepted is None:
            return (
                f"consumer_positions partition {self.partition}: no position row, "
                f"the ledger holds {self.entries} entries and {self.rejected_rows} rejected"
            )
        return (
            f"consumer_positions partition {self.partition}: accepted {self.accepted} "
            f"(ledger {self.entries}), rejected {self.rejected} (ledger {self.rejected_rows})"
        )


@dataclass(slots=True)
class RebuildReport:
    entries: int = 0  # entries replayed
    erased_entries: int = 0  # entries of erased subjects: unreadable, not replayed
    subjects: int = 0  # subjects replayed
    erased_subjects: int = 0
    carried_violations: int = 0  # erased subjects' violations kept as recorded
    rows: dict[str, int] = field(default_factory=dict)  # rebuilt rows per table
    differences: list[Difference] = field(default_factory=list)
    count_differences: list[CountDifference] = field(default_factory=list)
    count_drift: list[CountDrift] = field(default_factory=list)  # kept counts (migration 021)
    swapped: bool = False  # the live read models were replaced
    seconds: float = 0.0

    @property
    def equal(self) -> bool:
        return not self.differences and not self.count_differences and not self.count_drift


async def rebuild_read_models(
    connection: asyncpg.Connection,
    keyring: KeyRing,
    policy: PolicyVersions | Policy,
    events_topic: str,
    *,
    swap: bool = False,
) -> RebuildReport:
    """Recompute every read model from ``ledger_entries``, compare it with the live
    one, and with ``swap`` make the live ones equal to the rebuilt ones, in one
    transaction (see the module's docstring for what is locked).

    Raises:
        RebuildError: an entry cannot be read or replayed; nothing was changed.
    """
    started = time.perf_counter()
    report = RebuildReport()
    isolation = "read_committed" if swap else "repeatable_read"
    async with connection.transaction(isolation=isolation):
        if swap:
            await connection.execute(LOCK_OUT_BATCHES)
        for model in READ_MODELS:
            await connection.execute(_create_rebuilt(model))
        erased = [row["subject"] for row in await connection.fetch(ERASED_SUBJECTS)]
        report.erased_subjects = len(erased)
        report.erased_entries = await connection.fetchval(ERASED_ENTRIES, erased)
        await connection.execute(REBUILD_ERASURES)
        carried = await connection.execute(CARRY_ERASED_VIOLATIONS, erased)
        report.carried_violations = int(carried.split()[-1])
        await _replay(connection, keyring, as_versions(policy), erased, report)
        for model in READ_MODELS:
            report.rows[model.table] = await connection.fetchval(
                f"SELECT count(*) FROM rebuilt_{model.table}"  # noqa: S608 (fixed names)
            )
            report.differences += await _differences(connection, model)
        report.count_differences = await _count_differences(connection, events_topic)
        report.count_drift = await row_counts.count_differences(connection)
        if swap and not report.equal:
            await _swap(connection, report, events_topic)
            if report.count_drift:  # the swap's own changes are counted by the triggers
                await row_counts.recount(connection)
            report.swapped = True
    report.seconds = time.perf_counter() - started
    return report


class _Replay:
    """What the replay has built so far, merged as the worker's writes merge it."""

    def __init__(self, live_ids: dict[tuple[str, str], int]) -> None:
        self.files: dict[str, SubjectFile] = {}
        self.keys: dict[str, bytes] = {}
        self.consents: list[ConsentChangeRow] = []
        self.disclosures: list[DisclosureRow] = []
        self.current: dict[tuple[str, str], CurrentConsentRow] = {}
        self.violations: dict[tuple[str, str], ViolationRow] = {}
        self.registrations: dict[str, list[VisitorRegistration]] = {}
        self.live_ids = live_ids
        self.restored = 0  # violations not in the live table, numbered -1, -2, ...

    def settle(
        self, run: Sequence[Checked], seqs: list[int], policy: PolicyVersions, at: datetime
    ) -> None:
        outcome = settle_batch(run, {}, self.files, policy, iter(seqs))
        if len(outcome.accepted) != len(run):
            refused = {record.offset for record, _ in outcome.rejected} | {
                record.offset for record in outcome.duplicates
            }
            raise RebuildError(
                f"the core does not accept {len(run) - len(outcome.accepted)} entries the ledger "
                f"holds (offsets {sorted(refused)[:5]}): is the ledger's intake older than this one?"
            )
        consents, current, shared = fact_rows(outcome, set())
        self.consents += consents
        self.disclosures += shared
        for latest in current:
            where = (latest.subject, latest.purpose)
            stored = self.current.get(where)
            if stored is None or (stored.occurred_us, stored.seq) < (
                latest.occurred_us,
                latest.seq,
            ):
                self.current[where] = latest
        self.merge(violation_rows(outcome.changes, at))

    def rejudge(self, published: PublishedVersion, versions: PolicyVersions) -> None:
        """What the workers' re-judging after ``published`` changed, stamped with its
        publication time as they stamp it (store/policy_versions.py)."""
        since = published.rejudge_from_us
        at = published.published_at
        for subject, file in self.files.items():
            changes, relabelled = file.rejudge_since(
                since, versions, self.registrations.get(subject, ())
            )
            self.merge(violation_rows(changes, at))
            for v in relabelled:
                key = (v.event_id, v.rule.value)
                known = self.violations.get(key)
                if known is not None:
                    self.violations[key] = known._replace(
                        updated_at=at, policy_version=v.policy_version
                    )

    def merge(self, rows: list[ViolationRow]) -> None:
        """Rows of changed violations, merged as the worker's upsert merges them."""
        for changed in rows:
            key = (changed.event_id, changed.rule)
            known = self.violations.get(key)
            if known is not None:
                self.violations[key] = known._replace(
                    **{name: getattr(changed, name) for name in VIOLATION_RESTATED}
                )
                continue
            number = self.live_ids.get(key)
            if number is None:
                self.restored += 1
                number = -self.restored
            self.violations[key] = changed._replace(id=number)


async def _replay(
    connection: asyncpg.Connection,
    keyring: KeyRing,
    policy: PolicyVersions,
    erased: list[str],
    report: RebuildReport,
) -> None:
    """Replay the entries of subjects never erased and write what they give."""
    live_ids = {
        (row["event_id"], row["rule"]): row["id"]
        for row in await connection.fetch(LIVE_VIOLATION_IDS)
    }
    replay = _Replay(live_ids)
    run: list[Checked] = []
    seqs: list[int] = []
    run_at: datetime | None = None
    by_table = {model.table: model for model in READ_MODELS}
    published = {item.event_id: item for item in await published_versions(connection)}
    async for row in connection.cursor(ENTRIES, erased, prefetch=2_000):
        if run_at is not None and (
            row["recorded_at"] != run_at or row["kafka_partition"] == POLICY_LOG_PARTITION
        ):
            replay.settle(run, seqs, policy, run_at)
            run, seqs, run_at = [], [], None
            if len(replay.consents) + len(replay.disclosures) >= RUN_ROWS:
                await _write_facts(connection, by_table, replay)
        if row["kafka_partition"] == POLICY_LOG_PARTITION:
            # A published version: later batches judge under it, and what was
            # judged before it is judged again, as the workers do.
            version = published[row["event_id"]]
            policy = policy.with_version(version.policy())
            replay.rejudge(version, policy)
            report.entries += 1
            continue
        run_at = row["recorded_at"]
        body = parse_json_object(_plain_payload(keyring, replay.keys, row))
        if row["type"] == "VisitorRegistered":
            data = body.get("data")
            notice = data.get("rights_notice") if isinstance(data, dict) else None
            replay.registrations.setdefault(row["subject"], []).append(VisitorRegistration(
                row["event_id"], row["subject"], row["occurred_us"], row["seq"],
                notice if isinstance(notice, str) else None,
            ))  # fmt: skip
        event = ValidEvent(row["event_id"], row["type"], row["subject"], row["occurred_us"], body)
        record = Record(row["kafka_partition"], row["kafka_offset"], b"")
        run.append(Checked(record, event, row["digest"]))
        seqs.append(row["seq"])
        report.entries += 1
    if run_at is not None:
        replay.settle(run, seqs, policy, run_at)
    await _write_facts(connection, by_table, replay)
    await connection.execute(
        _insert_rebuilt(by_table["current_consents"]), list(replay.current.values())
    )
    await connection.execute(
        _insert_rebuilt(by_table["violations"]), list(replay.violations.values())
    )
    report.subjects = len(replay.files)


async def _write_facts(
    connection: asyncpg.Connection, by_table: dict[str, ReadModel], replay: _Replay
) -> None:
    await connection.execute(_insert_rebuilt(by_table["consent_changes"]), replay.consents)
    await connection.execute(_insert_rebuilt(by_table["disclosures"]), replay.disclosures)
    replay.consents, replay.disclosures = [], []


def _plain_payload(keyring: KeyRing, keys: dict[str, bytes], row: asyncpg.Record) -> bytes:
    """The entry's event JSON: opened with its subject's key (or in clear, as a
    ledger written with ``LEDGER_INTEGRITY=false`` keeps it)."""
    payload: bytes = row["payload"]
    if not row["payload_sha256"]:
        return payload
    subject: str = row["subject"]
    key = keys.get(subject)
    if key is None:
        wrapped = row["wrapped_key"]
        if wrapped is None:
            raise RebuildError(
                f"subject {subject!r} has no key and was never erased: "
                f"entry {row['event_id']!r} cannot be read"
            )
        try:
            key = keys[subject] = keyring.unwrap(subject, wrapped)
        except (KeyUnwrapError, MasterKeyUnavailable) as exc:
            raise RebuildError(
                f"the key of subject {subject!r} does not unwrap: is LEDGER_MASTER_KEY the "
                f"worker's? ({exc})"
            ) from None
    try:
        return open_sealed(key, subject, row["event_id"], payload)
    except PayloadUnreadable:
        raise RebuildError(
            f"entry {row['event_id']!r} (seq {row['seq']}) does not open with its subject's key"
        ) from None


async def _differences(connection: asyncpg.Connection, model: ReadModel) -> list[Difference]:
    """Rows only in the live table and rows only in the rebuilt one, paired by key."""
    live_only = await connection.fetch(_only_in(model, model.table, f"rebuilt_{model.table}"))
    rebuilt_only = await connection.fetch(_only_in(model, f"rebuilt_{model.table}", model.table))
    pairs: dict[tuple[Any, ...], list[dict[str, Any] | None]] = {}
    for side, rows in enumerate((live_only, rebuilt_only)):
        for found in rows:
            values = dict(found)
            key = tuple(values[name] for name in model.key)
            pairs.setdefault(key, [None, None])[side] = values
    return [
        Difference(model.table, key, live, rebuilt)
        for key, (live, rebuilt) in sorted(pairs.items(), key=lambda item: str(item[0]))
    ]


async def _count_differences(
    connection: asyncpg.Connection, events_topic: str
) -> list[CountDifference]:
    return [
        CountDifference(
            row["kafka_partition"], row["accepted"], row["entries"], row["rejected"],
            row["rejected_rows"],
        )
        for row in await connection.fetch(COUNTS, events_topic, POLICY_LOG_PARTITION)
        if (row["accepted"], row["rejected"]) != (row["entries"], row["rejected_rows"])
    ]  # fmt: skip


async def _swap(connection: asyncpg.Connection, report: RebuildReport, events_topic: str) -> None:
    """Make the live read models equal to the rebuilt ones: delete the rows that
    differ, insert the rebuilt ones (a violation keeps its live id)."""
    await connection.execute(NUMBER_RESTORED_VIOLATIONS)
    for model in READ_MODELS:
        differences = [item for item in report.differences if item.table == model.table]
        gone = [item.key for item in differences if item.live is not None]
        added = [item.key for item in differences if item.rebuilt is not None]
        if gone:
            await connection.execute(_delete_live(model), *_columns(gone, len(model.key)))
        if added:
            await connection.execute(_insert_live(model), *_columns(added, len(model.key)))
    for count in report.count_differences:
        if count.accepted is not None:  # a partition without a position row keeps none
            await connection.execute(
                REPAIR_COUNTS, events_topic, count.partition, count.entries, count.rejected_rows
            )


def _columns(keys: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[key[index] for key in keys] for index in range(width)]
