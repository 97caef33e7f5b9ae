-- Who may call the API (CONTRACT §7): opaque bearer tokens issued by
-- `consent-ledger token create`. Only the SHA-256 of a token is stored: a
-- token is 256 random bits, so a fast hash is as good as a slow one against
-- guessing, and a stolen table holds nothing a caller can present. A revoked
-- token keeps its row (the access log names it); a name is taken by at most one
-- token that is not revoked.
CREATE TABLE api_tokens (
    id            bigserial   PRIMARY KEY,
    name          text        NOT NULL CHECK (name <> ''),
    token_sha256  bytea       NOT NULL UNIQUE CHECK (octet_length(token_sha256) = 32),
    roles         text[]      NOT NULL,
    sources       text[]      NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- One row per API answer that carried named subjects' personal data: who
-- (token name and the role that allowed it), what (endpoint, subjects), why
-- (the caller's X-Purpose). Append-only like ledger_entries: by a trigger and
-- by privileges. An erasure leaves it as it is: subject ids are pseudonymous.
CREATE TABLE access_log (
    id          bigserial   PRIMARY KEY,
    accessed_at timestamptz NOT NULL DEFAULT now(),
    token_name  text        NOT NULL,
    role        text        NOT NULL,
    endpoint    text        NOT NULL,
    subjects    text[]      NOT NULL,
    purpose     text
);
CREATE INDEX access_log_subjects ON access_log USING gin (subjects);
CREATE INDEX access_log_token ON access_log (token_name, id);
CREATE INDEX access_log_time ON access_log (accessed_at, id);

CREATE FUNCTION access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'access_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER access_log_no_update BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION access_log_append_only();
CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION access_log_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON access_log FROM PUBLIC;
DO $$ BEGIN
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON access_log FROM %I', current_user);
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_ledger_service') THEN
        -- The API issues, lists, revokes and touches tokens (`/v1/tokens`), and
        -- appends to the access log, nothing more.
        GRANT SELECT, INSERT, UPDATE ON api_tokens TO consent_ledger_service;
        GRANT SELECT, INSERT ON access_log TO consent_ledger_service;
        GRANT USAGE, SELECT ON api_tokens_id_seq, access_log_id_seq TO consent_ledger_service;
    END IF;
END $$;
