-- Policy versions published to the running service (CONTRACT §9), append-only
-- like ledger_entries: a version, once published, is what judged events and
-- cannot be rewritten. Each is also an entry of the policy log in the ledger
-- (ledger_entries, Merkle log POLICY_LOG_PARTITION in store/policy_versions.py)
-- whose payload is the text itself: its payload_sha256 is the text's SHA-256,
-- so a signed checkpoint proves which texts were published, and verify checks
-- them as it checks every entry.
CREATE TABLE policy_versions (
    revision          integer     PRIMARY KEY,       -- publication order: 1, 2, ...
    version           text        NOT NULL UNIQUE,
    effective_from_us bigint,                        -- NULL: in force since always
    policy_text       text        NOT NULL,          -- exactly as published (UTF-8)
    sha256            bytea       NOT NULL,          -- SHA-256 of policy_text's UTF-8 bytes
    publisher         text        NOT NULL,
    published_at      timestamptz NOT NULL,
    event_id          text        NOT NULL UNIQUE    -- its entry in the ledger's policy log
);
CREATE FUNCTION policy_versions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'policy_versions is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER policy_versions_no_update BEFORE UPDATE OR DELETE ON policy_versions
    FOR EACH ROW EXECUTE FUNCTION policy_versions_append_only();
CREATE TRIGGER policy_versions_no_truncate BEFORE TRUNCATE ON policy_versions
    FOR EACH STATEMENT EXECUTE FUNCTION policy_versions_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON policy_versions FROM PUBLIC;
DO $$ BEGIN
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON policy_versions FROM %I', current_user);
END $$;

-- The revision of the published set, one row. Every batch reads it FOR SHARE
-- in its transaction and a publication updates it: a publication waits for
-- the batches judging under the old set to commit, and a batch that starts
-- meanwhile waits for the publication, then judges under the new set.
-- Re-judging takes it FOR UPDATE, so it never interleaves with a batch.
CREATE TABLE policy_revision (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    revision  integer NOT NULL
);
INSERT INTO policy_revision VALUES (true, 0);

-- Re-judging owed to a publication: every disclosure and visitor registration
-- dated at or after from_us, subject by subject in order (after_subject is
-- the last one done), in bounded steps while the stream goes on.
CREATE TABLE policy_rejudging (
    revision      integer PRIMARY KEY REFERENCES policy_versions (revision),
    from_us       bigint  NOT NULL,
    after_subject text    NOT NULL DEFAULT '',
    subjects      bigint  NOT NULL DEFAULT 0,      -- re-judged so far
    opened        bigint  NOT NULL DEFAULT 0,
    retracted     bigint  NOT NULL DEFAULT 0,
    done_at       timestamptz
);
CREATE INDEX ledger_entries_registrations ON ledger_entries (subject, occurred_us)
    WHERE type = 'VisitorRegistered';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_ledger_service') THEN
        GRANT SELECT, INSERT ON policy_versions TO consent_ledger_service;
        GRANT SELECT, INSERT, UPDATE ON policy_revision, policy_rejudging
            TO consent_ledger_service;
    END IF;
END $$;
