"""Response bodies of the HTTP API (docs/CONTRACT.md §6), as pydantic models.

They exist so that ``/openapi.json`` and ``/docs`` describe every answer,
errors included. Instants are RFC 3339 strings in UTC (``...Z``), written by
:func:`consent_ledger.core.timestamps.format_micros`, so the API and ``check``
print times the same way.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from consent_ledger.core.consents import ConsentState

_INSTANT = "RFC 3339 instant in UTC, e.g. 2026-03-01T08:00:00Z"


class ViolationStatus(StrEnum):
    """Whether a violation stands, or a late event cleared it."""

    OPEN = "open"
    RETRACTED = "retracted"


# -- errors --------------------------------------------------------------------


class ErrorDetail(BaseModel):
    """What went wrong: a stable code for programs and a sentence for people.

    Some errors add fields: ``parameter`` (which query parameter is bad),
    ``limit`` (the body size limit), ``failed`` (which dependencies are down).
    """

    model_config = ConfigDict(extra="allow")

    code: str = Field(examples=["invalid-parameter"])
    message: str = Field(examples=["limit: Input should be less than or equal to 1000"])


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer of the API has this shape (some add fields)."""

    error: ErrorDetail


# -- POST /v1/events -----------------------------------------------------------


class AcceptedEvents(BaseModel):
    """Every event was valid and the broker acknowledged every one."""

    accepted: list[str] = Field(description="The ids of the published events, in request order")


class RejectedEvent(BaseModel):
    """One event of the request that failed a check of docs/CONTRACT.md §2."""

    index: int = Field(description="0-based position in the request (0 for a single event)")
    reason: Literal["too-large", "invalid-json", "invalid-envelope", "unknown-type", "invalid-data"]
    detail: str
    event_id: str | None = Field(description="The event's id, when it has a usable one")


#: The most invalid events a 422 of ``POST /v1/events`` lists; it counts them all.
MAX_LISTED_REJECTIONS = 100


class RejectedEvents(BaseModel):
    """At least one event was invalid: nothing was published."""

    error: ErrorDetail
    rejected: list[RejectedEvent] = Field(
        description=f"The first {MAX_LISTED_REJECTIONS} invalid events, in request order",
        max_length=MAX_LISTED_REJECTIONS,
    )
    rejected_total: int = Field(description="How many events of the request are invalid", ge=1)


# -- violations ----------------------------------------------------------------


class ViolationItem(BaseModel):
    """One (event, rule) the ledger found broken, open or retracted."""

    event_id: str
    rule: str
    subject: str
    severity: Literal["critical", "high", "medium"]
    status: ViolationStatus
    clause: str
    clause_title: str | None = Field(
        description="The clause's title in the privacy statement's words (English, or "
        "Norwegian where only the Norwegian statement has it), from the policy version "
        "that judged it; null when the policy gives no words for the clause"
    )
    explanation: str
    detected_at: str = Field(description=f"When the ledger first found it; {_INSTANT}")
    occurred_at: str = Field(description=f"The event time of the violating event; {_INSTANT}")
    updated_at: str = Field(description=f"When its status last changed; {_INSTANT}")
    policy_version: str | None = Field(
        description="The policy version in force at the event's time, which judged it; "
        "null for violations recorded before versions were"
    )


class ViolationPage(BaseModel):
    items: list[ViolationItem]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page"
    )


# -- subjects ------------------------------------------------------------------


class Consent(BaseModel):
    """The consent status of one purpose."""

    purpose: str
    status: ConsentState
    since: str = Field(
        description=(
            "When this status began: the time of the deciding consent event, or for "
            f"`expired` the expiry; {_INSTANT}"
        )
    )
    event_id: str = Field(description="The consent event that decides the status")
    expires_at: str | None = Field(description=f"The grant's expiry, if it has one; {_INSTANT}")


class SubjectConsents(BaseModel):
    subject: str
    as_of: str = Field(description=f"The instant the statuses hold at; {_INSTANT}")
    consents: list[Consent] = Field(
        description="One entry per purpose with a consent event at or before `as_of`, by purpose"
    )


class SubjectErased(BaseModel):
    """410 Gone: the subject asked to be forgotten and its personal data is unreadable."""

    error: ErrorDetail
    subject: str
    erased: Literal[True] = True
    erased_at: str = Field(description=f"The time of the erasure request; {_INSTANT}")
    detail: str


class LedgerEntry(BaseModel):
    """One accepted event of the subject, where it sits in the ledger, and its content."""

    event_id: str
    type: str
    occurred_at: str = Field(description=f"Event time; {_INSTANT}")
    recorded_at: str = Field(description=f"When the ledger recorded it; {_INSTANT}")
    partition: int = Field(description="Kafka partition, which is also its Merkle log")
    offset: int = Field(description="Kafka offset of the record")
    leaf_index: int = Field(description="Position in its partition's Merkle log")
    event: dict[str, Any] | None = Field(
        description="The event as accepted, decrypted; null when its key is gone"
    )


class LedgerEntryPage(BaseModel):
    subject: str
    items: list[LedgerEntry]
    next_cursor: str | None


# -- the subject report (CONTRACT §8) -------------------------------------------


class ReportClause(BaseModel):
    """A clause of the privacy statement: its id in the policy, and its title
    where the policy gives one."""

    id: str
    title: str | None


class ReportNotice(BaseModel):
    """The privacy notice a consent was given under, as the event named it."""

    id: str | None
    version: str | None


class ReportConsent(BaseModel):
    event_id: str
    action: Literal["given", "withdrawn"]
    time: str = Field(description=f"The consent event's time; {_INSTANT}")
    purpose: str
    clause: ReportClause | None = Field(
        description="The purpose's clause in the policy in force then; null for a purpose "
        "it does not know"
    )
    controller: str
    channel: str | None
    notice: ReportNotice | None = Field(description="Of a consent given, when the event named one")
    expires_at: str | None = Field(description=f"A grant's expiry; {_INSTANT}")
    reason: str | None = Field(description="A withdrawal's reason, when given")


class ReportRecipient(BaseModel):
    """Who received the data (GDPR Art. 15(1)(c), as C-154/21 reads it: named)."""

    kind: str
    id: str
    name: str | None = Field(description="As the event named it; null when it named none")


class ReportLegalBasis(BaseModel):
    kind: str
    reference: str | None


class ReportVerdictViolation(BaseModel):
    """A violation the disclosure caused."""

    rule: str
    clause: ReportClause
    severity: str
    status: ViolationStatus


class ReportDisclosure(BaseModel):
    event_id: str
    time: str = Field(description=f"The disclosure's event time; {_INSTANT}")
    recipient: ReportRecipient
    purpose: str
    clause: ReportClause | None
    controller: str
    data_categories: list[str]
    legal_basis: ReportLegalBasis | None
    verdict: Literal["allowed", "violation"] = Field(
        description="`violation` while a violation it caused is open"
    )
    violations: list[ReportVerdictViolation] = Field(
        description="The violations it caused, open and retracted"
    )


class ReportVisit(BaseModel):
    """A registration in the visitor system of one of the premises."""

    event_id: str
    time: str = Field(description=f"The registration's event time; {_INSTANT}")
    site: str | None
    rights_notice: str | None = Field(description="The notice of rights shown, if any")
    clause: ReportClause
    verdict: Literal["allowed", "violation"]
    violations: list[ReportVerdictViolation]


class ReportViolation(BaseModel):
    event_id: str
    rule: str
    clause: ReportClause
    severity: str
    status: ViolationStatus
    explanation: str
    occurred_at: str = Field(description=f"The violating event's time; {_INSTANT}")
    detected_at: str = Field(description=f"When the ledger first found it; {_INSTANT}")
    policy_version: str | None


class ReportClauseWords(BaseModel):
    """A clause the report names, in the privacy statement's own words."""

    id: str
    title: str
    language: str = Field(description="Of `text`: English where the statement has it")
    text: str | None


class SubjectReport(BaseModel):
    """What the ledger holds about one subject (GDPR Art. 15). An erased subject's
    report says only that it was erased and when: every list is empty."""

    subject: str
    generated_at: str = Field(description=f"When the report was made; {_INSTANT}")
    erased: bool
    erased_at: str | None = Field(description=f"The erasure request's time; {_INSTANT}")
    consents: list[ReportConsent] = Field(description="Given and withdrawn, by event time")
    disclosures: list[ReportDisclosure] = Field(description="By event time")
    visits: list[ReportVisit] = Field(description="Visitor registrations, by event time")
    violations: list[ReportViolation] = Field(description="About the subject, by event time")
    clauses: list[ReportClauseWords] = Field(
        description="Each clause the report names that the policy gives words for"
    )
    checkpoint: StoredCheckpoint | None = Field(
        description="The ledger's latest signed checkpoint (null before the first): save it "
        "as a file for `consent-ledger verify --trusted-checkpoint`"
    )


# -- rejected ------------------------------------------------------------------


class RejectedRecord(BaseModel):
    """A record the worker refused, kept with its raw bytes (docs/CONTRACT.md §2)."""

    id: int
    reason: str
    detail: str
    event_id: str | None
    subject: str | None
    partition: int
    offset: int
    recorded_at: str = Field(description=_INSTANT)
    raw: str = Field(description="The record as it came: UTF-8 text, or base64 (`raw_encoding`)")
    raw_encoding: Literal["utf-8", "base64"]
    raw_bytes: int = Field(description="The record's size in bytes", ge=0)
    raw_truncated: bool = Field(
        description=(
            "Whether `raw` shows only the start of the record: one larger than a page of "
            "`/v1/rejected` on its own"
        )
    )


class RejectedPage(BaseModel):
    """At most ``limit`` records and about a megabyte of JSON; ``next_cursor`` when
    more follow."""

    items: list[RejectedRecord]
    next_cursor: str | None


# -- operations ----------------------------------------------------------------


class OutboxStats(BaseModel):
    """Messages (alerts, copies of rejected records) waiting to be relayed to the broker."""

    depth: int = Field(description="Messages waiting")
    oldest_age_s: float = Field(description="Age of the oldest one in seconds; 0 when none waits")
    dead: int = Field(description="Messages the broker refused for good, kept with the reason")


class WebhookStats(BaseModel):
    """Alerts POSTed to one webhook (CONTRACT §8), by state. ``url`` is the hook's
    name, or its URL without credentials, query and fragment."""

    url: str
    delivered: int = Field(description="Alerts the receiver answered 2xx to")
    failed_attempts: int = Field(description="POSTs that failed (to be retried, or since dead)")
    pending: int = Field(description="Alerts waiting for their first or next attempt")
    dead: int = Field(description="Alerts given up on after the retry horizon (a day)")
    oldest_pending_age_s: float = Field(description="Age of the oldest pending alert; 0 if none")
    last_error: str | None = Field(description="The latest failure still on record")


class WebhooksStats(BaseModel):
    """Alerts POSTed to the webhooks of ``LEDGER_WEBHOOKS``, in all and per URL."""

    delivered: int
    failed_attempts: int
    pending: int
    dead: int
    urls: list[WebhookStats]


class Stats(BaseModel):
    """Counts over ``ledger.events``: every record read is in exactly one of the
    first three."""

    accepted: int
    duplicates: int
    rejected: int
    violations_open: int
    violations_retracted: int
    lag: int | None = Field(
        description=(
            "Records on the topic the worker has not processed yet; null when the broker "
            "cannot be asked"
        )
    )
    outbox: OutboxStats
    webhooks: WebhooksStats


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """200 either way: ``degraded`` when the outbox relay made no progress for a
    minute while messages wait (alerts are late; the API itself serves)."""

    status: Literal["ready", "degraded"] = "ready"
    checks: dict[str, str] = Field(examples=[{"database": "ok", "broker": "ok", "outbox": "ok"}])


class NotReady(BaseModel):
    error: ErrorDetail
    checks: dict[str, str] = Field(
        examples=[{"database": "ok", "broker": "KafkaConnectionError: Unable to bootstrap"}]
    )


# -- the auditor's endpoints ---------------------------------------------------

_BASE64_HASH = "32-byte SHA-256 hash in standard base64 with padding"


class SigningKey(BaseModel):
    """One key that signs (or signed) checkpoints, with the period it signed."""

    key_id: str = Field(description="32 hex digits, as every checkpoint it signed names it")
    algorithm: Literal["Ed25519"] = "Ed25519"
    public_key_pem: str = Field(description="SubjectPublicKeyInfo PEM")
    first_signed: str | None = Field(
        description="RFC 3339: the first checkpoint it signed (null: none yet)"
    )
    last_signed: str | None = Field(description="RFC 3339: the latest checkpoint it signed")
    current: bool = Field(description="The key that signs new checkpoints")


class PublicKey(BaseModel):
    """The keys that sign the ledger's checkpoints; an auditor pins them and
    checks every checkpoint and proof with the key it names, offline.

    ``key_id``, ``algorithm`` and ``public_key_pem`` are the current key's (the
    shape before rotation existed, kept as it was); ``keys`` lists every key with
    the period it signed (CONTRACT §7)."""

    key_id: str = Field(
        description="The current key: 32 hex digits, the first 16 bytes of SHA-256 of the "
        "raw public key; every checkpoint it signs names it"
    )
    algorithm: Literal["Ed25519"] = "Ed25519"
    public_key_pem: str = Field(description="The current key, SubjectPublicKeyInfo PEM")
    log_id: str = Field(description="The log this API serves; signed into every checkpoint")
    keys: list[SigningKey] = Field(
        description="Every signing key, in the order they signed (after a rotation, several)"
    )


class TreeHead(BaseModel):
    """One partition's Merkle log at the checkpoint: its size and RFC 9162 root."""

    model_config = ConfigDict(extra="forbid")

    partition: int
    size: int = Field(description="Leaves in the partition's log")
    root: str = Field(description=f"Tree hash; {_BASE64_HASH}")


class SignedCheckpoint(BaseModel):
    """A signed checkpoint, as stored (format in ``integrity/checkpoints.py``).

    The Ed25519 signature covers the text ``consent-ledger checkpoint v1\\n<log_id>\\n
    <issued_at>\\n`` followed by one ``<partition> <size> <root>\\n`` line per tree
    head, ascending by partition.
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["consent-ledger/checkpoint/v1"]
    log_id: str
    issued_at: str = Field(
        description="RFC 3339 in UTC with six fraction digits, e.g. 2026-03-01T08:00:00.000000Z"
    )
    tree_heads: list[TreeHead] = Field(description="One per partition, ascending by partition")
    key_id: str = Field(description="Id of the signing key (see GET /v1/ledger/public-key)")
    signature: str = Field(description="The 64-byte Ed25519 signature in standard base64")


class StoredCheckpoint(BaseModel):
    id: int = Field(description="Its number; ids grow with issue order")
    checkpoint: SignedCheckpoint


class CheckpointPage(BaseModel):
    items: list[StoredCheckpoint] = Field(description="Newest first")
    next_cursor: str | None


class ProvedEntry(BaseModel):
    """What a Merkle leaf covers (``integrity/entry.py``): where and when the ledger
    recorded an event and the digest of its ciphertext, no personal data."""

    model_config = ConfigDict(extra="forbid")

    version: int
    event_id: str
    partition: int
    offset: int = Field(description="Kafka offset of the record")
    recorded_at: str = Field(description="RFC 3339 in UTC with six fraction digits")
    payload_sha256: str = Field(description="SHA-256 of the stored ciphertext, 64 hex digits")


class InclusionProof(BaseModel):
    """Proof that an entry is a leaf of its partition's log in the tree a
    checkpoint signs. Save it as it is and check it offline with
    ``consent-ledger verify-proof FILE --public-key PEM``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["consent-ledger/inclusion-proof/v1"]
    entry: ProvedEntry
    partition: int
    leaf_index: int = Field(description="Position in the partition's Merkle log")
    tree_size: int = Field(description="The checkpoint's size for the partition")
    leaf_hash: str = Field(description=f"SHA-256(0x00 || encoded entry); {_BASE64_HASH}")
    audit_path: list[str] = Field(
        description=f"RFC 9162 PATH(leaf_index, D[tree_size]), leaf to root; each a {_BASE64_HASH}"
    )
    checkpoint: SignedCheckpoint


class PartitionConsistency(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partition: int
    old_size: int
    new_size: int
    path: list[str] = Field(
        description=f"RFC 9162 PROOF(old_size, D[new_size]); each a {_BASE64_HASH}; "
        "empty when the sizes are equal or old_size is 0"
    )


class ConsistencyProof(BaseModel):
    """Proof that every partition's log in the new checkpoint extends the same
    partition's log in the old one, nothing rewritten. Check it offline with
    ``consent-ledger verify-proof FILE --public-key PEM``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["consent-ledger/consistency-proof/v1"]
    old_checkpoint: SignedCheckpoint
    new_checkpoint: SignedCheckpoint
    partitions: list[PartitionConsistency] = Field(
        description="One per partition of the old checkpoint, ascending"
    )
