-- Analysts' SQL (CONTRACT §8): the schema `analytics`, views over the read
-- models for BI tools, and the role `consent_ledger_analyst` that may read
-- them and nothing else. The views are the contract: their names, columns and
-- types stay across releases (docs/analytics.md documents each, and a test
-- holds the document to the views); the tables under them may change.
--
-- Views run with their owner's rights (the role migrating), so the analyst
-- needs no right on any table: it gets USAGE on this schema and SELECT on its
-- views, nothing in `public`, no ledger bytes (no payloads, digests, keys).
--
-- Erasure: the worker deletes an erased subject's consent changes, current
-- consents and disclosures, and rewrites its violations' explanations
-- (store/batch_write.py, FORGET_SUBJECTS). The views mirror that on their own:
-- the rows of a subject in `erasures` are left out or scrubbed here too, so a
-- read model rebuilt or restored out of order cannot show them to an analyst.
-- Views that leave rows out are security barriers, so that a function an
-- analyst writes (in pg_temp) cannot see the rows before the filter.
--
-- Times are timestamptz (exact: the microseconds the ledger keeps), days are
-- UTC dates of the event's time (a violation falls in its event's day, as in
-- GET /v1/reports/violations).

CREATE SCHEMA IF NOT EXISTS analytics;
REVOKE ALL ON SCHEMA analytics FROM PUBLIC;
COMMENT ON SCHEMA analytics IS
    'Views for analysts and BI tools, stable across releases (docs/analytics.md). '
    'Read them as a member of consent_ledger_analyst.';

CREATE VIEW analytics.violations AS
SELECT v.id AS violation_id,
       v.event_id,
       v.rule,
       v.severity,
       v.clause,
       v.status,
       v.subject,
       e.subject IS NOT NULL AS subject_erased,
       CASE WHEN e.subject IS NULL THEN v.explanation
            ELSE 'Details erased at the request of the subject (GDPR Art. 17).' END
           AS explanation,
       v.policy_version,
       timestamptz 'epoch' + v.occurred_us * interval '1 microsecond' AS occurred_at,
       v.detected_at,
       v.updated_at
FROM violations AS v
LEFT JOIN erasures AS e ON e.subject = v.subject;
COMMENT ON VIEW analytics.violations IS
    'Every violation ever opened, one row per (event, rule): open, or retracted by a later '
    'event or policy; never deleted. An erased subject''s rows stay, without the explanation.';
COMMENT ON COLUMN analytics.violations.violation_id IS 'Stable number of the violation (order of first detection).';
COMMENT ON COLUMN analytics.violations.event_id IS 'The event (DataShared or VisitorRegistered) that broke the rule.';
COMMENT ON COLUMN analytics.violations.rule IS 'The rule broken (CONTRACT §4), e.g. consent-withdrawn.';
COMMENT ON COLUMN analytics.violations.severity IS 'critical, high or medium (fixed per rule).';
COMMENT ON COLUMN analytics.violations.clause IS 'The clause of the privacy statement the rule enforces.';
COMMENT ON COLUMN analytics.violations.status IS 'open, or retracted (a late event or a new policy version cleared it).';
COMMENT ON COLUMN analytics.violations.subject IS 'The data subject''s pseudonymous id.';
COMMENT ON COLUMN analytics.violations.subject_erased IS 'True when the subject asked to be erased.';
COMMENT ON COLUMN analytics.violations.explanation IS 'Why, in words; a fixed text once the subject is erased.';
COMMENT ON COLUMN analytics.violations.policy_version IS 'The policy version that judged it; NULL for violations stored before versions were recorded.';
COMMENT ON COLUMN analytics.violations.occurred_at IS 'The event''s time (when the disclosure or registration happened).';
COMMENT ON COLUMN analytics.violations.detected_at IS 'When the ledger first opened it.';
COMMENT ON COLUMN analytics.violations.updated_at IS 'When its status last changed.';

CREATE VIEW analytics.disclosures WITH (security_barrier) AS
SELECT d.event_id,
       d.subject,
       d.purpose,
       timestamptz 'epoch' + d.occurred_us * interval '1 microsecond' AS occurred_at,
       d.subject_role,
       d.controller,
       d.recipient_kind,
       d.recipient_id,
       d.data_categories,
       d.legal_basis_kind,
       d.legal_basis_reference,
       (SELECT count(*) FROM violations AS v
        WHERE v.event_id = d.event_id AND v.status = 'open') AS open_violations
FROM disclosures AS d
WHERE NOT EXISTS (SELECT 1 FROM erasures AS e WHERE e.subject = d.subject);
COMMENT ON VIEW analytics.disclosures IS
    'Every disclosure (DataShared) of a subject not erased, with how many rules it breaks now.';
COMMENT ON COLUMN analytics.disclosures.event_id IS 'The DataShared event''s id.';
COMMENT ON COLUMN analytics.disclosures.subject IS 'The data subject''s pseudonymous id.';
COMMENT ON COLUMN analytics.disclosures.purpose IS 'The purpose of the disclosure.';
COMMENT ON COLUMN analytics.disclosures.occurred_at IS 'When the data was shared (the event''s time).';
COMMENT ON COLUMN analytics.disclosures.subject_role IS 'The subject''s role, e.g. customer_contact.';
COMMENT ON COLUMN analytics.disclosures.controller IS 'The controller that shared the data.';
COMMENT ON COLUMN analytics.disclosures.recipient_kind IS 'Kind of recipient, e.g. group_company, partner, public_authority.';
COMMENT ON COLUMN analytics.disclosures.recipient_id IS 'The recipient''s id.';
COMMENT ON COLUMN analytics.disclosures.data_categories IS 'Categories of personal data shared.';
COMMENT ON COLUMN analytics.disclosures.legal_basis_kind IS 'Kind of legal basis given (e.g. court_order), NULL when none.';
COMMENT ON COLUMN analytics.disclosures.legal_basis_reference IS 'The legal basis'' reference, NULL when none.';
COMMENT ON COLUMN analytics.disclosures.open_violations IS 'Violations of this disclosure open now (0: it breaks no rule).';

CREATE VIEW analytics.consent_events WITH (security_barrier) AS
SELECT c.event_id,
       c.subject,
       c.purpose,
       CASE WHEN c.granted THEN 'given' ELSE 'withdrawn' END AS action,
       timestamptz 'epoch' + c.occurred_us * interval '1 microsecond' AS occurred_at,
       timestamptz 'epoch' + c.expires_us * interval '1 microsecond' AS expires_at,
       c.controller,
       c.channel
FROM consent_changes AS c
WHERE NOT EXISTS (SELECT 1 FROM erasures AS e WHERE e.subject = c.subject);
COMMENT ON VIEW analytics.consent_events IS
    'Every consent given or withdrawn (ConsentGiven, ConsentWithdrawn) by a subject not erased.';
COMMENT ON COLUMN analytics.consent_events.event_id IS 'The consent event''s id.';
COMMENT ON COLUMN analytics.consent_events.subject IS 'The data subject''s pseudonymous id.';
COMMENT ON COLUMN analytics.consent_events.purpose IS 'The purpose consented to or withdrawn.';
COMMENT ON COLUMN analytics.consent_events.action IS 'given or withdrawn.';
COMMENT ON COLUMN analytics.consent_events.occurred_at IS 'When the subject gave or withdrew it (the event''s time).';
COMMENT ON COLUMN analytics.consent_events.expires_at IS 'When a consent given expires, NULL when it does not.';
COMMENT ON COLUMN analytics.consent_events.controller IS 'The controller the consent is given to.';
COMMENT ON COLUMN analytics.consent_events.channel IS 'Where it was given or withdrawn (e.g. web), NULL when not said.';

CREATE VIEW analytics.current_consents WITH (security_barrier) AS
SELECT c.subject,
       c.purpose,
       CASE WHEN NOT c.granted THEN 'withdrawn'
            WHEN c.expires_us IS NOT NULL
                 AND timestamptz 'epoch' + c.expires_us * interval '1 microsecond' <= now()
                THEN 'expired'
            ELSE 'valid' END AS status,
       timestamptz 'epoch' + c.occurred_us * interval '1 microsecond' AS since,
       timestamptz 'epoch' + c.expires_us * interval '1 microsecond' AS expires_at,
       c.event_id
FROM current_consents AS c
WHERE NOT EXISTS (SELECT 1 FROM erasures AS e WHERE e.subject = c.subject);
COMMENT ON VIEW analytics.current_consents IS
    'The consent of each (subject, purpose) now: its latest change by event time, for subjects not erased.';
COMMENT ON COLUMN analytics.current_consents.subject IS 'The data subject''s pseudonymous id.';
COMMENT ON COLUMN analytics.current_consents.purpose IS 'The purpose.';
COMMENT ON COLUMN analytics.current_consents.status IS 'valid, withdrawn, or expired (given, but its expiry has passed at the time of the query).';
COMMENT ON COLUMN analytics.current_consents.since IS 'The time of the change in force.';
COMMENT ON COLUMN analytics.current_consents.expires_at IS 'When a consent given expires, NULL when it does not.';
COMMENT ON COLUMN analytics.current_consents.event_id IS 'The consent event in force.';

CREATE VIEW analytics.policy_versions AS
SELECT p.revision,
       p.version,
       timestamptz 'epoch' + p.effective_from_us * interval '1 microsecond' AS effective_from,
       p.publisher,
       p.published_at,
       encode(p.sha256, 'hex') AS sha256,
       p.policy_text
FROM policy_versions AS p;
COMMENT ON VIEW analytics.policy_versions IS
    'Policy versions published to the running service, in publication order (append-only).';
COMMENT ON COLUMN analytics.policy_versions.revision IS 'Publication order: 1, 2, ...';
COMMENT ON COLUMN analytics.policy_versions.version IS 'The version''s name, as violations.policy_version names it.';
COMMENT ON COLUMN analytics.policy_versions.effective_from IS 'From when it judges events (by event time), NULL: since always.';
COMMENT ON COLUMN analytics.policy_versions.publisher IS 'Who published it (the token''s name).';
COMMENT ON COLUMN analytics.policy_versions.published_at IS 'When it was published.';
COMMENT ON COLUMN analytics.policy_versions.sha256 IS 'SHA-256 of the text''s UTF-8 bytes, hexadecimal.';
COMMENT ON COLUMN analytics.policy_versions.policy_text IS 'The policy document (YAML) exactly as published.';

CREATE VIEW analytics.daily_events AS
SELECT ((timestamptz 'epoch' + l.occurred_us * interval '1 microsecond') AT TIME ZONE 'UTC')::date
           AS day,
       l.type,
       count(*) AS events
FROM ledger_entries AS l
GROUP BY 1, 2;
COMMENT ON VIEW analytics.daily_events IS
    'Accepted events per UTC day of their time and type (erasure requests and published '
    'policies included: ErasureRequested, PolicyPublished).';
COMMENT ON COLUMN analytics.daily_events.day IS 'The UTC date of the events'' time.';
COMMENT ON COLUMN analytics.daily_events.type IS 'The event type, e.g. DataShared.';
COMMENT ON COLUMN analytics.daily_events.events IS 'How many the ledger accepted.';

CREATE VIEW analytics.daily_violations AS
SELECT ((timestamptz 'epoch' + v.occurred_us * interval '1 microsecond') AT TIME ZONE 'UTC')::date
           AS day,
       v.rule,
       v.severity,
       v.clause,
       count(*) AS opened,
       count(*) FILTER (WHERE v.status = 'retracted') AS retracted,
       count(*) FILTER (WHERE v.status = 'open') AS open
FROM violations AS v
GROUP BY 1, 2, 3, 4;
COMMENT ON VIEW analytics.daily_violations IS
    'Violations per UTC day of their event''s time, rule, severity and clause: over all days, '
    'opened minus retracted is what is open now.';
COMMENT ON COLUMN analytics.daily_violations.day IS 'The UTC date of the violating events'' time.';
COMMENT ON COLUMN analytics.daily_violations.rule IS 'The rule broken.';
COMMENT ON COLUMN analytics.daily_violations.severity IS 'critical, high or medium.';
COMMENT ON COLUMN analytics.daily_violations.clause IS 'The clause of the privacy statement the rule enforces.';
COMMENT ON COLUMN analytics.daily_violations.opened IS 'Violations opened (retracted ones included).';
COMMENT ON COLUMN analytics.daily_violations.retracted IS 'Of those, retracted since.';
COMMENT ON COLUMN analytics.daily_violations.open IS 'Of those, open now.';

CREATE VIEW analytics.daily_disclosures WITH (security_barrier) AS
SELECT ((timestamptz 'epoch' + d.occurred_us * interval '1 microsecond') AT TIME ZONE 'UTC')::date
           AS day,
       d.recipient_kind,
       d.purpose,
       count(*) AS disclosures,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM violations AS v WHERE v.event_id = d.event_id AND v.status = 'open'
       )) AS breaking_a_rule
FROM disclosures AS d
WHERE NOT EXISTS (SELECT 1 FROM erasures AS e WHERE e.subject = d.subject)
GROUP BY 1, 2, 3;
COMMENT ON VIEW analytics.daily_disclosures IS
    'Disclosures of subjects not erased per UTC day, recipient kind and purpose, and how many break a rule now.';
COMMENT ON COLUMN analytics.daily_disclosures.day IS 'The UTC date of the disclosures'' time.';
COMMENT ON COLUMN analytics.daily_disclosures.recipient_kind IS 'Kind of recipient.';
COMMENT ON COLUMN analytics.daily_disclosures.purpose IS 'The purpose of the disclosure.';
COMMENT ON COLUMN analytics.daily_disclosures.disclosures IS 'How many.';
COMMENT ON COLUMN analytics.daily_disclosures.breaking_a_rule IS 'Of those, how many have a violation open now.';

-- The role: cluster-wide, so it may exist already (another database of the
-- cluster migrated first, or an operator made it). Created only by a migrating
-- role that may create roles; otherwise the operator creates it
-- (deploy/README.md) and a later start grants it nothing more than below.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_ledger_analyst') THEN
        IF EXISTS (SELECT 1 FROM pg_roles
                   WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
            BEGIN
                CREATE ROLE consent_ledger_analyst NOLOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a migration of another database
            END;
        ELSE
            RAISE NOTICE 'role consent_ledger_analyst not created (% may not create roles): '
                'CREATE ROLE consent_ledger_analyst NOLOGIN, then GRANT USAGE ON SCHEMA '
                'analytics and SELECT ON ALL TABLES IN SCHEMA analytics to it', current_user;
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_ledger_analyst') THEN
        GRANT USAGE ON SCHEMA analytics TO consent_ledger_analyst;
        GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO consent_ledger_analyst;
        -- Views a later release adds here are readable too.
        ALTER DEFAULT PRIVILEGES IN SCHEMA analytics GRANT SELECT ON TABLES TO consent_ledger_analyst;
    END IF;
END $$;

-- Batch latency as a histogram for /metrics (consent_ledger_batch_duration_seconds):
-- per partition, how many batches took at most each bound of
-- store/batch_write.py's BATCH_SECONDS_BOUNDS, one slot per bound plus one for
-- longer ones, not cumulative. Batches committed before this column count in
-- the sum and count only.
ALTER TABLE consumer_positions
    ADD COLUMN batch_seconds_buckets bigint[] NOT NULL DEFAULT array_fill(0::bigint, ARRAY[12]);
