"""Policy versions published to the running service (CONTRACT §9): publish, list,
the set a batch judges under, and re-judging after a publication.

A publication, in one transaction: the revision row is updated (it waits for
batches judging under the old set, which hold it FOR SHARE, to commit), the
text is checked against every version in force (configured and published),
stored append-only with its SHA-256, appended to the ledger's *policy log*, and
a re-judging of what is dated at or after its ``effective_from`` is queued.

The policy log is a Merkle log of its own, numbered :data:`POLICY_LOG_PARTITION`
(no Kafka partition has that number), whose entries' payload is the published
text itself in UTF-8: the entry's ``payload_sha256`` *is* the text's SHA-256,
the entry's offset is the revision less one, and checkpoints sign the log's
head with the partitions'. ``verify`` checks it as it checks every log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from consent_ledger.core.facts import ConsentChange, Disclosure, VisitorRegistration
from consent_ledger.core.policy import (
    SINCE_ALWAYS,
    Policy,
    PolicyError,
    PolicyVersions,
    parse_policy,
)
from consent_ledger.core.timeline import SubjectFile, Violation, ViolationChange
from consent_ledger.core.timestamps import format_micros
from consent_ledger.core.verdicts import Rule, Severity
from consent_ledger.integrity.entry import encode_entry, to_micros
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.integrity.merkle import MerkleFrontier, leaf_hash
from consent_ledger.integrity.shredding import open_sealed

# int4's largest value: the policy log's number, beside Kafka's partitions.
POLICY_LOG_PARTITION = 2**31 - 1
POLICY_ENTRY_TYPE = "PolicyPublished"
# The ledger entry's subject: no data subject's (a subject is never empty).
POLICY_ENTRY_SUBJECT = ""

BUMP_REVISION = "UPDATE policy_revision SET revision = revision + 1 RETURNING revision"
PUBLISHED = """
SELECT revision, version, effective_from_us, policy_text, sha256, publisher, published_at, event_id
FROM policy_versions ORDER BY revision
"""
INSERT_VERSION = """
INSERT INTO policy_versions (revision, version, effective_from_us, policy_text, sha256, publisher,
                             published_at, event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
POLICY_LOG = "SELECT size, frontier FROM merkle_logs WHERE kafka_partition = $1 FOR UPDATE"
APPEND_POLICY_ENTRY = """
WITH entry AS (
    INSERT INTO ledger_entries (seq, event_id, subject, type, occurred_us, recorded_at, recorded_us,
                                kafka_partition, kafka_offset, digest, payload, payload_sha256,
                                leaf_index, leaf_hash)
    VALUES (nextval('ledger_seq'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $9, $11, $12)
)
INSERT INTO merkle_logs (kafka_partition, size, frontier) VALUES ($7, $13, $14)
ON CONFLICT (kafka_partition) DO UPDATE SET size = EXCLUDED.size, frontier = EXCLUDED.frontier
"""
QUEUE_REJUDGING = "INSERT INTO policy_rejudging (revision, from_us) VALUES ($1, $2)"

# What a batch reads, in its transaction: the set's revision, held FOR SHARE
# until the batch commits (see the module docstring).
REVISION_FOR_BATCH = "SELECT revision FROM policy_revision FOR SHARE"
REVISION_FOR_REJUDGING = "SELECT revision FROM policy_revision FOR UPDATE"
PENDING_REJUDGING = """
SELECT j.revision, j.from_us, j.after_subject, v.published_at
FROM policy_rejudging j JOIN policy_versions v USING (revision)
WHERE j.done_at IS NULL ORDER BY j.revision LIMIT 1
"""
# The next subjects, in order, with a disclosure or a visitor registration dated
# at or after the version's start; an erased subject's are gone or unreadable.
REJUDGE_SUBJECTS = """
SELECT subject FROM (
    SELECT subject FROM disclosures WHERE occurred_us >= $1 AND subject > $2
    UNION
    SELECT subject FROM ledger_entries
    WHERE type = 'VisitorRegistered' AND occurred_us >= $1 AND subject > $2
) s WHERE NOT EXISTS (SELECT 1 FROM erasures e WHERE e.subject = s.subject)
ORDER BY subject LIMIT $3
"""
SUBJECT_FACTS = """
SELECT
    ARRAY(SELECT ROW(event_id, subject, occurred_us, seq, purpose, granted, expires_us)
          FROM consent_changes WHERE subject = ANY($1::text[])) AS consents,
    ARRAY(SELECT ROW(event_id, subject, occurred_us, seq, purpose, subject_role, recipient_kind,
                     recipient_id, data_categories, legal_basis_kind, legal_basis_reference)
          FROM disclosures WHERE subject = ANY($1::text[]) AND occurred_us >= $2) AS disclosures,
    ARRAY(SELECT ROW(l.event_id, l.subject, l.occurred_us, l.seq, l.payload, k.wrapped_key)
          FROM ledger_entries l JOIN subject_keys k USING (subject)
          WHERE l.subject = ANY($1::text[]) AND l.type = 'VisitorRegistered'
            AND l.occurred_us >= $2) AS registrations,
    ARRAY(SELECT ROW(event_id, rule, subject, severity, clause, explanation, occurred_us,
                     policy_version)
          FROM violations WHERE $3 AND subject = ANY($1::text[]) AND status = 'open')
        AS open_violations
"""
ADVANCE_REJUDGING = """
UPDATE policy_rejudging SET after_subject = CASE WHEN $2 = '' THEN after_subject ELSE $2 END, subjects = subjects + $3, opened = opened + $4,
    retracted = retracted + $5, done_at = CASE WHEN $6 THEN now() END
WHERE revision = $1
"""


@dataclass(frozen=True, slots=True)
class PublishedVersion:
    """A version as published: what ``GET /v1/policy/versions`` lists."""

    revision: int
    version: str
    effective_from_us: int | None
    text: str
    sha256: bytes
    publisher: str
    published_at: datetime
    event_id: str  # its entry in the ledger's policy log

    @property
    def rejudge_from_us(self) -> int:
        """From when it re-judges: its effective_from, or everything (in force always)."""
        return SINCE_ALWAYS if self.effective_from_us is None else self.effective_from_us

    def policy(self) -> Policy:
        return parse_policy(self.text, f"<published revision {self.revision}>")

    def document(self) -> dict[str, Any]:
        """Its JSON form (``GET /v1/policy/versions``, ``policy versions --json``)."""
        return {
            "revision": self.revision,
            "version": self.version,
            "effective_from": None
            if self.effective_from_us is None
            else format_micros(self.effective_from_us),
            "sha256": self.sha256.hex(),
            "publisher": self.publisher,
            "published_at": format_micros(to_micros(self.published_at)),
            "ledger_event_id": self.event_id,
        }


def policy_sha256(text: str) -> bytes:
    """The SHA-256 a version is published with: of its text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).digest()


async def published_versions(connection: asyncpg.Connection) -> list[PublishedVersion]:
    """Every published version, in publication order."""
    return [PublishedVersion(*row) for row in await connection.fetch(PUBLISHED)]


def versions_with(
    configured: PolicyVersions, published: Sequence[PublishedVersion]
) -> PolicyVersions:
    """The set in force: the configured versions and the published ones. Raises
    :class:`PolicyError` when two clash (same ``version`` or ``effective_from``)."""
    return PolicyVersions((*configured.versions, *(item.policy() for item in published)))


async def publish_version(
    connection: asyncpg.Connection,
    configured: PolicyVersions,
    text: str,
    publisher: str,
    source: str = "<published policy>",
) -> PublishedVersion:
    """Publish ``text`` as a new version, in its own transaction (see the module
    docstring). Raises :class:`PolicyError` when it is not a valid policy, or
    clashes with a version in force; nothing is stored then."""
    policy = parse_policy(text, source)
    now = datetime.now(UTC)
    async with connection.transaction():
        revision = await connection.fetchval(BUMP_REVISION)
        published = await published_versions(connection)
        try:
            versions_with(configured, published).with_version(policy)
        except PolicyError as exc:
            raise PolicyError(source, exc.key, f"{exc.problem} (against {exc.source})") from None
        sha256 = policy_sha256(text)
        event_id = f"policy-version/{revision}/{sha256.hex()}"
        recorded_us = to_micros(now)
        offset = revision - 1
        stored = await connection.fetchrow(POLICY_LOG, POLICY_LOG_PARTITION)
        frontier = MerkleFrontier.from_bytes(stored["frontier"]) if stored else MerkleFrontier()
        leaf = leaf_hash(encode_entry(event_id, POLICY_LOG_PARTITION, offset, now, sha256))
        index = frontier.append(leaf)
        await connection.execute(
            INSERT_VERSION, revision, policy.version, policy.effective_from, text, sha256,
            publisher, now, event_id,
        )  # fmt: skip
        occurred_us = policy.effective_from if policy.effective_from is not None else recorded_us
        await connection.execute(
            APPEND_POLICY_ENTRY, event_id, POLICY_ENTRY_SUBJECT, POLICY_ENTRY_TYPE, occurred_us,
            now, recorded_us, POLICY_LOG_PARTITION, offset, sha256, text.encode("utf-8"), index,
            leaf, frontier.size, frontier.to_bytes(),
        )  # fmt: skip
        published_now = PublishedVersion(
            revision, policy.version, policy.effective_from, text, sha256, publisher, now, event_id
        )
        await connection.execute(QUEUE_REJUDGING, revision, published_now.rejudge_from_us)
    return published_now


class PolicySet:
    """The set of versions a process judges under: the configured ones and those
    published, reloaded when the revision a transaction read is not the one
    held. One per worker process."""

    def __init__(self, configured: PolicyVersions) -> None:
        self.configured = configured
        self.revision = 0
        self.versions = configured

    async def at(self, connection: asyncpg.Connection, revision: int) -> PolicyVersions:
        """The set at ``revision`` (read in the caller's transaction)."""
        if revision != self.revision:
            self.versions = versions_with(self.configured, await published_versions(connection))
            self.revision = revision
        return self.versions


@dataclass(slots=True)
class RejudgingStep:
    """What one step of re-judging did."""

    revision: int
    subjects: int
    changes: list[ViolationChange]
    relabelled: list[Violation]
    done: bool
    last_subject: str | None = None
    alerts: int = 0  # written to the outbox
    # The publication's time: what re-judging changes is stamped with it, so that
    # a rebuild replaying the publication where the ledger holds it agrees.
    published_at: datetime | None = None


async def rejudge_step(
    connection: asyncpg.Connection,
    policies: PolicySet,
    open_sealed: Any,
    limit: int,
) -> RejudgingStep | None:
    """Re-judge the next ``limit`` subjects of the oldest pending re-judging, in the
    caller's transaction, with every batch held off (the revision row FOR
    UPDATE); None when none is pending. ``open_sealed(subject, event_id,
    payload, wrapped_key)`` returns a stored event's JSON data (the visitor
    registrations are kept sealed in the ledger only). The caller writes the
    changes."""
    revision = await connection.fetchval(REVISION_FOR_REJUDGING)
    job = await connection.fetchrow(PENDING_REJUDGING)
    if job is None:
        return None
    versions = await policies.at(connection, revision)
    subjects = [row[0] for row in await connection.fetch(
        REJUDGE_SUBJECTS, job["from_us"], job["after_subject"], limit
    )]  # fmt: skip
    since = job["from_us"]
    files, registrations = await load_subject_files(connection, subjects, since, open_sealed)
    changes: list[ViolationChange] = []
    relabelled: list[Violation] = []
    for subject in subjects:
        found = sorted(registrations.get(subject, ()), key=lambda r: (r.instant, r.seq))
        opened_or_retracted, renamed = files[subject].rejudge_since(since, versions, found)
        changes.extend(opened_or_retracted)
        relabelled.extend(renamed)
    done = len(subjects) < limit
    last = subjects[-1] if subjects else None
    return RejudgingStep(
        job["revision"], len(subjects), changes, relabelled, done, last,
        published_at=job["published_at"],
    )  # fmt: skip


async def advance_rejudging(connection: asyncpg.Connection, step: RejudgingStep) -> None:
    """Record the step done (in the transaction that wrote its changes)."""
    opened = sum(1 for change in step.changes if change.status.value == "open")
    await connection.execute(
        ADVANCE_REJUDGING, step.revision, step.last_subject or "", step.subjects, opened,
        len(step.changes) - opened, step.done,
    )  # fmt: skip


async def load_subject_files(
    connection: asyncpg.Connection,
    subjects: list[str],
    since: int,
    open_sealed: Any,
    *,
    with_open: bool = True,
) -> tuple[dict[str, SubjectFile], dict[str, list[VisitorRegistration]]]:
    """The files of ``subjects`` (consent timelines, disclosures dated at or after
    ``since``, open violations unless ``with_open`` is false) and their visitor
    registrations dated at or after ``since``, opened with ``open_sealed``."""
    files = {subject: SubjectFile(subject) for subject in subjects}
    registrations: dict[str, list[VisitorRegistration]] = {}
    if subjects:
        row = await connection.fetchrow(SUBJECT_FACTS, subjects, since, with_open)
        for event_id, subject, occurred_us, seq, purpose, granted, expires_us in row["consents"]:
            change = ConsentChange(
                event_id, subject, occurred_us, seq, purpose, granted, expires_us
            )
            files[subject].consents.setdefault(purpose, []).append(change)
        for file in files.values():
            for timeline in file.consents.values():
                timeline.sort(key=lambda change: (change.instant, change.seq))
        for (event_id, subject, occurred_us, seq, purpose, role, recipient_kind, recipient_id,
             categories, basis_kind, basis_reference) in row["disclosures"]:  # fmt: skip
            shared = Disclosure(
                event_id, subject, occurred_us, seq, purpose, role, recipient_kind,
                recipient_id, tuple(categories), basis_kind, basis_reference,
            )  # fmt: skip
            files[subject].disclosures.setdefault(purpose, []).append(shared)
        for event_id, subject, occurred_us, seq, payload, wrapped in row["registrations"]:
            data = open_sealed(subject, event_id, bytes(payload), bytes(wrapped))
            notice = data.get("rights_notice") if isinstance(data, dict) else None
            registrations.setdefault(subject, []).append(VisitorRegistration(
                event_id, subject, occurred_us, seq, notice if isinstance(notice, str) else None
            ))  # fmt: skip
        for (event_id, rule, subject, severity, clause, explanation, occurred_us,
             policy_version) in row["open_violations"]:  # fmt: skip
            violation = Violation(
                event_id, Rule(rule), subject, Severity(severity), clause, explanation,
                occurred_us, policy_version,
            )  # fmt: skip
            files[subject].open.setdefault(event_id, {})[violation.rule] = violation
    return files, registrations


def sealed_data_opener(keyring: KeyRing) -> Any:
    """``open_sealed(subject, event_id, payload, wrapped_key)``: a stored event's
    ``data``, opened with its subject's key (re-judging and what-if read visitor
    registrations so: the ledger keeps them sealed only)."""

    def open_data(subject: str, event_id: str, payload: bytes, wrapped: bytes) -> Any:
        key = keyring.unwrap(subject, wrapped)
        return orjson.loads(open_sealed(key, subject, event_id, payload)).get("data")

    return open_data
