-- consent-ledger schema, version 1.
-- The ledger (ledger_entries) is append-only; every other table is a read model
-- or bookkeeping that the worker rebuilds from the ledger's facts in the same
-- transaction as the entries it covers.

-- Every accepted event, in ingest order. Never updated, never deleted.
CREATE TABLE ledger_entries (
    seq           bigint      PRIMARY KEY,           -- ingest order; breaks ties in event time
    event_id      text        NOT NULL UNIQUE,       -- the idempotency key
    subject       text        NOT NULL,
    type          text        NOT NULL,
    occurred_us   bigint      NOT NULL,              -- event time, microseconds since the epoch
    recorded_at   timestamptz NOT NULL,              -- when the ledger recorded it
    recorded_us   bigint      NOT NULL,              -- the same, exact, as hashed into the Merkle leaf
    kafka_partition integer   NOT NULL,
    kafka_offset  bigint      NOT NULL,
    digest        bytea       NOT NULL,              -- SHA-256 of the canonical event JSON (redelivery check)
    payload       bytea       NOT NULL,              -- the event JSON sealed with the subject's key
    payload_sha256 bytea      NOT NULL,              -- SHA-256 of payload (the ciphertext)
    leaf_index    bigint      NOT NULL,              -- position in its partition's Merkle log
    leaf_hash     bytea       NOT NULL,              -- RFC 9162 leaf hash of the encoded entry
    UNIQUE (kafka_partition, leaf_index)
);
CREATE SEQUENCE ledger_seq AS bigint;
CREATE INDEX ledger_entries_subject ON ledger_entries (subject, occurred_us, seq);

-- Append-only, enforced in the database, not by habit.
CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only();
-- And by privileges: the service's role (the one migrating, which owns the
-- table) keeps INSERT and SELECT only. A superuser still bypasses both,
-- which is what `consent-ledger verify` is for.
REVOKE UPDATE, DELETE, TRUNCATE ON ledger_entries FROM PUBLIC;
DO $$ BEGIN
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON ledger_entries FROM %I', current_user);
END $$;

-- One Merkle log per Kafka partition: its size and compact frontier (RFC 9162 hashing).
CREATE TABLE merkle_logs (
    kafka_partition integer PRIMARY KEY,
    size            bigint  NOT NULL,
    frontier        bytea   NOT NULL
);

-- Per-subject data keys; erasure deletes the key (crypto-shredding).
CREATE TABLE subject_keys (
    subject    text  PRIMARY KEY,
    wrapped_key bytea NOT NULL
);

-- Facts the verdicts depend on (removed when the subject is erased).
CREATE TABLE consent_changes (
    event_id    text    PRIMARY KEY,
    subject     text    NOT NULL,
    purpose     text    NOT NULL,
    occurred_us bigint  NOT NULL,
    seq         bigint  NOT NULL,
    granted     boolean NOT NULL,
    expires_us  bigint,
    controller  text    NOT NULL,
    channel     text
);
CREATE INDEX consent_changes_subject ON consent_changes (subject, purpose, occurred_us, seq);

CREATE TABLE disclosures (
    event_id      text    PRIMARY KEY,
    subject       text    NOT NULL,
    purpose       text    NOT NULL,
    occurred_us   bigint  NOT NULL,
    seq           bigint  NOT NULL,
    subject_role  text    NOT NULL,
    controller    text    NOT NULL,
    recipient_kind text   NOT NULL,
    recipient_id  text    NOT NULL,
    data_categories text[] NOT NULL,
    legal_basis_kind text,
    legal_basis_reference text
);
CREATE INDEX disclosures_subject ON disclosures (subject, occurred_us);

CREATE TABLE erasures (
    subject     text   PRIMARY KEY,
    event_id    text   NOT NULL,
    erased_us   bigint NOT NULL,
    recorded_at timestamptz NOT NULL
);

-- Current consent per (subject, purpose): the latest change by event time.
CREATE TABLE current_consents (
    subject     text    NOT NULL,
    purpose     text    NOT NULL,
    event_id    text    NOT NULL,
    occurred_us bigint  NOT NULL,
    seq         bigint  NOT NULL,
    granted     boolean NOT NULL,
    expires_us  bigint,
    PRIMARY KEY (subject, purpose)
);

-- Violations: one row per (event id, rule), open or retracted, never deleted.
CREATE TABLE violations (
    id           bigserial   UNIQUE,               -- stable order for cursor pagination
    event_id     text        NOT NULL,
    rule         text        NOT NULL,
    subject      text        NOT NULL,
    severity     text        NOT NULL,
    clause       text        NOT NULL,
    explanation  text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('open', 'retracted')),
    occurred_us  bigint      NOT NULL,
    detected_at  timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (event_id, rule)
);
CREATE INDEX violations_status ON violations (status, id);
CREATE INDEX violations_subject ON violations (subject, id);
CREATE INDEX violations_open_by_subject ON violations (subject) WHERE status = 'open';

-- Rejected input, kept with its raw bytes and reason.
CREATE TABLE rejected_events (
    id              bigserial   PRIMARY KEY,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    reason          text        NOT NULL,
    detail          text        NOT NULL,
    event_id        text,
    subject         text,                          -- when the record names one: erasure scrubs raw
    raw             bytea       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    UNIQUE (kafka_partition, kafka_offset)
);
CREATE INDEX rejected_events_subject ON rejected_events (subject);

-- Messages to publish after commit (alerts, rejected copies): the outbox.
CREATE TABLE outbox (
    id        bigserial PRIMARY KEY,
    topic     text      NOT NULL,
    key       bytea,
    value     bytea     NOT NULL,
    headers   jsonb     NOT NULL DEFAULT '[]',
    subject   text                              -- whose data it carries: erasure scrubs it
);
CREATE INDEX outbox_subject ON outbox (subject);  -- the relay deletes a row once the broker acknowledged it


-- Where the worker is in each partition of ledger.events: committed in the
-- same transaction as the rows it covers, so a replayed batch is skipped.
CREATE TABLE consumer_positions (
    topic           text    NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset     bigint  NOT NULL,
    accepted        bigint  NOT NULL DEFAULT 0,
    duplicates      bigint  NOT NULL DEFAULT 0,
    rejected        bigint  NOT NULL DEFAULT 0,
    batches         bigint  NOT NULL DEFAULT 0,         -- batches that touched this partition
    batch_seconds   double precision NOT NULL DEFAULT 0, -- their summed processing time
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition)
);

-- Signed checkpoints over every partition's tree head.
CREATE TABLE checkpoints (
    id         bigserial   PRIMARY KEY,
    issued_at  timestamptz NOT NULL,
    document   jsonb       NOT NULL
);
