-- 0006: what the whole bot has spent today and this month, read at every admission.
--
-- The operator's budget (BUDGET_* settings) is checked before each job is
-- written, in one aggregate over the jobs created since the start of the UTC
-- month (storage/spend.py); this index keeps that a range read of recent rows
-- instead of a scan of the 90 days of history the table keeps.

CREATE INDEX jobs_created ON jobs (created_at);
