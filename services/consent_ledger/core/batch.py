"""Judge one batch of Kafka records: the stream worker's pure core.

The worker reads a batch, asks :func:`check_records` which ids and subjects it
touches, loads what the ledger knows of them (digests of accepted ids, subject
files), then :func:`settle_batch` decides every record in order (accepted,
duplicate or rejected) and records the accepted facts in the subject files,
collecting the violation changes. Everything it returns is what the worker
writes, in one transaction. ``check`` runs the same intake and subject files
one line at a time, so both give the same verdicts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from consent_ledger.core.cloudevents import is_binary_mode, structured_from_binary
from consent_ledger.core.facts import Erasure, Fact, fact_of
from consent_ledger.core.intake import (
    Admission,
    Rejection,
    ValidEvent,
    admit,
    content_digest,
    record_size_problem,
    subject_named_in,
    validate,
    validate_parsed,
)
from consent_ledger.core.policy import PolicyVersions
from consent_ledger.core.timeline import SubjectFile, ViolationChange
from consent_ledger.core.vocabulary import CHANGES_EARLIER_VERDICTS, NAMES_A_PURPOSE


class Record(NamedTuple):
    """One record read from ``ledger.events``."""

    partition: int
    offset: int
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()
    key: bytes | None = None  # the Kafka key: names the subject (CONTRACT §1), also for erasure


class Checked(NamedTuple):
    record: Record
    outcome: ValidEvent | Rejection
    digest: bytes = b""  # a valid event's content digest (intake.content_digest)


class Accepted(NamedTuple):
    record: Record
    event: ValidEvent
    fact: Fact
    digest: bytes  # of the event's content: see intake.content_digest


@dataclass(slots=True)
class BatchOutcome:
    """What a batch did: the worker persists all of it in one transaction."""

    accepted: list[Accepted] = field(default_factory=list)
    duplicates: list[Record] = field(default_factory=list)
    rejected: list[tuple[Record, Rejection]] = field(default_factory=list)
    changes: list[ViolationChange] = field(default_factory=list)
    erased: dict[str, Erasure] = field(default_factory=dict)  # subjects erased by this batch


def check_record(record: Record) -> Checked:
    """Intake checks that need no history, for either CloudEvents mode, and the
    content digest of a valid event (pure work: the worker does it before its
    transaction)."""
    if record.headers and is_binary_mode(record.headers):
        outcome = record_size_problem(record.value) or validate_parsed(
            structured_from_binary(record.headers, record.value)
        )
    else:
        outcome = validate(record.value)
    if isinstance(outcome, Rejection):
        return Checked(record, outcome)
    return Checked(record, outcome, content_digest(outcome.body))


def check_records(records: Sequence[Record]) -> list[Checked]:
    return [check_record(record) for record in records]


MAX_SUBJECT_CHARS = 256  # CONTRACT §1


def filed_subject(text: str | None) -> str | None:
    """``text`` if an accepted event could name it as its subject, else None.

    A rejected record is filed under the subject it names, so that erasing the
    subject scrubs it; a string no accepted event can carry (empty, over 256
    characters, holding U+0000 or an unpaired surrogate) names nobody the ledger
    could erase, and PostgreSQL would refuse it in a text column or an index.
    """
    if not text or len(text) > MAX_SUBJECT_CHARS or "\x00" in text:
        return None
    try:
        text.encode()
    except UnicodeEncodeError:  # an unpaired surrogate
        return None
    return text


def subject_of_rejected(record: Record) -> str | None:
    """The subject a rejected record's value names, when it is a JSON object with one."""
    return filed_subject(subject_named_in(record.value))


def key_subject(key: bytes | None) -> str | None:
    """The subject a record's Kafka key names (CONTRACT §1: events are keyed by subject)."""
    if not key:
        return None
    try:
        return filed_subject(key.decode())
    except UnicodeDecodeError:
        return None


def settle_batch(
    checked: Sequence[Checked],
    accepted_digests: Mapping[str, bytes],
    files: dict[str, SubjectFile],
    policies: PolicyVersions,
    sequence: Iterator[int],
) -> BatchOutcome:
    """Decide each checked record in order and judge the accepted ones.

    ``accepted_digests`` holds the digests of ids the ledger accepted before this
    batch; ``files`` the subject files of the batch's subjects (missing ones are
    created); ``policies`` the versions to judge by, each event under the one in
    force at its time; ``sequence`` yields the ingest order numbers for accepted events.
    """
    outcome = BatchOutcome()
    in_batch: dict[str, bytes] = {}
    for record, result, digest in checked:
        if isinstance(result, Rejection):
            outcome.rejected.append((record, result))
            continue
        earlier = in_batch.get(result.id) or accepted_digests.get(result.id)
        admission = admit(result, digest, earlier)
        if isinstance(admission, Rejection):
            outcome.rejected.append((record, admission))
            continue
        if admission is Admission.DUPLICATE:
            outcome.duplicates.append(record)
            continue
        in_batch[result.id] = digest
        fact = fact_of(result, next(sequence))
        subject = files.get(result.subject)
        if subject is None:
            subject = files[result.subject] = SubjectFile(result.subject)
        was_erased = subject.erased_at
        outcome.changes.extend(subject.record(fact, policies))
        if isinstance(fact, Erasure) and subject.erased_at != was_erased:
            outcome.erased[result.subject] = fact
        outcome.accepted.append(Accepted(record, result, fact, digest))
    return outcome


@dataclass(frozen=True, slots=True)
class BatchNeeds:
    """What to load before settling a batch, and no more.

    Every subject's erasure state; the consent timeline of each (subject,
    purpose) a disclosure or consent change of the batch concerns; the earlier
    disclosures that a consent change (same purpose, dated at or after it) or
    an erasure (any purpose, dated after it) may re-judge; and the open
    violations of the subjects whose disclosures may be re-judged.
    """

    ids: list[str]
    subjects: list[str]
    timelines: list[tuple[str, str]]  # (subject, purpose)
    rejudge_from: list[tuple[str, str | None, int]]  # (subject, purpose or any, earliest instant)
    rejudged: list[str]  # subjects


def batch_needs(checked: Sequence[Checked]) -> BatchNeeds:
    ids: dict[str, None] = {}
    subjects: dict[str, None] = {}
    timelines: dict[tuple[str, str], None] = {}
    earliest: dict[tuple[str, str | None], int] = {}
    for _, result, _ in checked:
        if not isinstance(result, ValidEvent):
            continue
        ids[result.id] = None
        subjects[result.subject] = None
        kind = result.type
        purpose: str | None = None  # an erasure concerns every purpose
        if kind in NAMES_A_PURPOSE:
            purpose = result.body["data"]["purpose"]
            timelines[(result.subject, purpose)] = None
        if kind in CHANGES_EARLIER_VERDICTS:
            key = (result.subject, purpose)
            earliest[key] = min(result.instant, earliest.get(key, result.instant))
    return BatchNeeds(
        list(ids),
        list(subjects),
        list(timelines),
        [(subject, purpose, instant) for (subject, purpose), instant in earliest.items()],
        list({subject: None for subject, _ in earliest}),
    )
