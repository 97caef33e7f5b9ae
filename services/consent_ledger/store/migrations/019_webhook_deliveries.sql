-- Each alert published to ledger.violations is POSTed to every webhook that
-- takes it (LEDGER_WEBHOOKS, CONTRACT §8): one row per (alert, hook), written
-- by the outbox relay in the transaction that records the alert as published,
-- so that no alert is lost and none is queued twice. `body` holds the alert's
-- bytes as published. A row is delivered once its URL answered 2xx; until
-- then it waits for `next_attempt_at`, which backs off after each failure; a
-- row still failing `created_at` + the retry horizon (a day) later is dead.
-- Rows stay, as the record of what each URL was given; `url` is used to send
-- and never shown: `hook` (the hook's name, or its URL without credentials) is.
CREATE TABLE webhook_deliveries (
    delivery_id     uuid        PRIMARY KEY,
    url             text        NOT NULL,
    hook            text        NOT NULL,
    alert_id        text        NOT NULL,
    subject         text,
    body            bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    failures        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    dead_at         timestamptz,
    last_error      text,
    UNIQUE (url, alert_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (url, next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX webhook_deliveries_subject ON webhook_deliveries (subject);
CREATE INDEX webhook_deliveries_undelivered ON webhook_deliveries (hook)
    WHERE delivered_at IS NULL;
-- Deliveries and failed attempts per hook, counted as they happen (in the
-- statement that records each outcome): /v1/stats and /metrics read these and
-- only the undelivered rows, never the whole history, and the counts outlive
-- delivered rows an operator deletes.
CREATE TABLE webhook_totals (
    hook            text   PRIMARY KEY,
    delivered       bigint NOT NULL DEFAULT 0,
    failed_attempts bigint NOT NULL DEFAULT 0
);
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_ledger_service') THEN
        GRANT SELECT, INSERT, UPDATE ON webhook_deliveries, webhook_totals
            TO consent_ledger_service;
    END IF;
END $$;
