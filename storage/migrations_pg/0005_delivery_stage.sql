-- 0005: delivery becomes a stage of the job (storage/migrations/0004_delivery_stage.sql;
-- PostgreSQL's own 0004 is the process registry and the budget).
--
-- New states, with no constraint to change (see 0001): 'delivering' (a finished
-- image the bot is putting into Discord, retried across restarts) and
-- 'undeliverable' (made and paid for, but its destination is gone or the retry
-- window closed). The image or the notice of a failed or cancelled job is owed
-- until Discord confirmed it: `deliver_at` holds the next attempt, NULL once
-- nothing is owed.

ALTER TABLE jobs ADD COLUMN delivery_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN deliver_at TIMESTAMPTZ;
-- Why the last attempt did not get through ("Discord answered 503"), for the operator.
ALTER TABLE jobs ADD COLUMN delivery_error TEXT;
-- Discord's `nonce` (with enforce_nonce) on any message the bot posts for the job: a retry after a lost answer
-- or a crash gets the first message back instead of posting a second one.
ALTER TABLE jobs ADD COLUMN post_nonce TEXT;
-- How a failed job's notice reads: 'retryable', 'final' or 'refused'. No CHECK, as in SQLite: FailureKind
-- validates on read, and both backends accept the same values.
ALTER TABLE jobs ADD COLUMN failure_kind TEXT;
-- The member's own limits did not apply to this job (admin bypass); the server's line still did.
ALTER TABLE jobs ADD COLUMN exempt BOOLEAN NOT NULL DEFAULT false;

-- How many of a member's jobs may wait in the server's line (NULL: the default).
ALTER TABLE guild_settings ADD COLUMN member_queue INTEGER CHECK (member_queue >= 1);

-- Rows of the previous release, moved to what they mean now (the same statements as SQLite's, in its order).
UPDATE jobs SET state = 'undeliverable' WHERE state = 'failed' AND delivery = 'undeliverable';
UPDATE jobs SET deliver_at = updated_at WHERE state = 'completed';
UPDATE jobs SET deliver_at = finished_at
    WHERE state IN ('failed', 'cancelled') AND delivery IS NULL
      AND (message_id IS NOT NULL OR interaction_token IS NOT NULL);

-- What the delivery worker resumes: only rows that still owe something.
CREATE INDEX jobs_deliver_at ON jobs (deliver_at) WHERE deliver_at IS NOT NULL;

-- 'undeliverable' is final: the partial indexes of live jobs are rebuilt with it. Their WHERE is
-- storage/columns.py's UNFINISHED_WHERE, so the planner can prove a query's WHERE implies it (tests check plans).
DROP INDEX jobs_unfinished;
CREATE INDEX jobs_unfinished ON jobs (created_at)
    WHERE state NOT IN ('cancelled', 'delivered', 'failed', 'undeliverable');
DROP INDEX jobs_guild_unfinished;
CREATE INDEX jobs_guild_unfinished ON jobs (guild_id, created_at)
    WHERE state NOT IN ('cancelled', 'delivered', 'failed', 'undeliverable');

-- A deleted channel ends its live jobs: found without a scan.
CREATE INDEX jobs_channel_unfinished ON jobs (channel_id)
    WHERE state NOT IN ('cancelled', 'delivered', 'failed', 'undeliverable');
