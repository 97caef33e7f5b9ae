-- The policy version that judged each violation (CONTRACT §3: an event is
-- judged under the version in force at its time). NULL for violations stored
-- before versions were recorded: which text judged them is not known.
ALTER TABLE violations ADD COLUMN IF NOT EXISTS policy_version text;
