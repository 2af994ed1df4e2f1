-- 0007: what the whole bot has spent today and this month (storage/migrations/0006_spend_index.sql).
--
-- The operator's budget is checked before each job is written, in one aggregate over the jobs created since
-- the start of the UTC month (storage/postgres/reports.py's spend); this index keeps that a range read.

CREATE INDEX jobs_created ON jobs (created_at);
