-- No record stops the stream (CONTRACT §2).
--
-- A rejected record counts as the data of the subject its Kafka key names,
-- parseable or not: erasure scrubs rows whose key names the subject as well as
-- rows whose value does. Only keys that could name an accepted subject are kept
-- here (UTF-8, at most 256 characters, no U+0000).
ALTER TABLE rejected_events ADD COLUMN key_subject text;
CREATE INDEX rejected_events_key_subject ON rejected_events (key_subject)
    WHERE key_subject IS NOT NULL;

-- The outbox never jams: a message the broker refuses for good (too large,
-- invalid) moves to outbox_dead with the broker's reason, and the relay goes on.
-- created_at gives the age of the oldest message waiting (metrics, /readyz).
ALTER TABLE outbox ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
CREATE TABLE outbox_dead (
    id         bigint      PRIMARY KEY,            -- the id it had in outbox
    topic      text        NOT NULL,
    key        bytea,
    value      bytea       NOT NULL,
    headers    jsonb       NOT NULL,
    subject    text,                               -- whose data it carries: erasure scrubs it
    created_at timestamptz NOT NULL,
    died_at    timestamptz NOT NULL DEFAULT now(),
    reason     text        NOT NULL                -- what the broker or the producer said
);
CREATE INDEX outbox_dead_subject ON outbox_dead (subject);

-- When a relay last made progress (sent or buried a message): the API is
-- stateless, so whether the relay is stuck is read from here. One row.
CREATE TABLE outbox_relay (
    one           boolean     PRIMARY KEY DEFAULT true CHECK (one),
    progressed_at timestamptz NOT NULL
);
INSERT INTO outbox_relay (progressed_at) VALUES (now());

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_ledger_service') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_dead TO consent_ledger_service;
        GRANT SELECT, UPDATE ON outbox_relay TO consent_ledger_service;
    END IF;
END $$;
