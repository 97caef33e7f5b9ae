-- The analysts' reports (CONTRACT §8, store/reports.py): what lets one GROUP BY
-- over a million violations answer in well under a second.
--
-- Event time first, then the event id: a range of event times is read from the
-- index alone (the columns grouped by are included), and a violation meets its
-- disclosure by merging the two indexes in the same order. A violation's
-- occurred_us is its event's, so (occurred_us, event_id) finds its disclosure.
CREATE INDEX IF NOT EXISTS violations_by_time ON violations (occurred_us, event_id)
    INCLUDE (rule, clause, severity, status);
CREATE INDEX IF NOT EXISTS disclosures_by_time ON disclosures (occurred_us, event_id)
    INCLUDE (recipient_kind, recipient_id, purpose);

-- How many hours, days and weeks the violations span. Without them the planner
-- guesses a group per row of a bucket expression and sorts a million rows on disk
-- rather than hashing a few thousand groups. Each is the exact expression of
-- store/reports.py's bucket_expression (a unit test holds them equal): statistics
-- serve only an expression written the same way. Weeks start on Monday
-- 1970-01-05 (345600000000 µs), which starts a day and an hour too.
CREATE STATISTICS IF NOT EXISTS violations_hour_buckets ON
    (occurred_us - ((occurred_us - 345600000000) % 3600000000 + 3600000000) % 3600000000)
    FROM violations;
CREATE STATISTICS IF NOT EXISTS violations_day_buckets ON
    (occurred_us - ((occurred_us - 345600000000) % 86400000000 + 86400000000) % 86400000000)
    FROM violations;
CREATE STATISTICS IF NOT EXISTS violations_week_buckets ON
    (occurred_us - ((occurred_us - 345600000000) % 604800000000 + 604800000000) % 604800000000)
    FROM violations;
