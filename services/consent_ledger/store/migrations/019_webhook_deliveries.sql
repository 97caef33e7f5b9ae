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
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_ledger_service') THEN
        GRANT SELECT, INSERT, UPDATE ON webhook_deliveries TO consent_ledger_service;
    END IF;
END $$;
