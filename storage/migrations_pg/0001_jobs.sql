-- 0001: one row per image request, from the first write (before RunComfy hears
-- of it) to the image being delivered. PostgreSQL's translation of
-- storage/migrations/0001_jobs.sql: the same columns, indexes and meaning.
--
-- Datetimes are timestamptz (UTC instants, microseconds, compared as time).
-- Discord snowflakes are 64-bit: BIGINT. `state` has no CHECK constraint, as in
-- SQLite: the JobState enum validates on read, and a new state needs no ALTER.

CREATE TABLE jobs (
    -- An identity is a sequence: an id is never handed out twice, even after
    -- the newest row is deleted, so an old reroll button can never reach
    -- someone else's job.
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id        TEXT,
    parent_id         BIGINT REFERENCES jobs (id) ON DELETE SET NULL,
    model             TEXT             NOT NULL,
    prompt            TEXT             NOT NULL,
    aspect_ratio      TEXT             NOT NULL,
    seed              BIGINT           NOT NULL,
    state             TEXT             NOT NULL,
    queue_position    INTEGER,
    created_at        TIMESTAMPTZ      NOT NULL,
    queued_at         TIMESTAMPTZ,
    started_at        TIMESTAMPTZ,
    completed_at      TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    updated_at        TIMESTAMPTZ      NOT NULL,
    next_poll_at      TIMESTAMPTZ,
    poll_count        INTEGER          NOT NULL DEFAULT 0,
    result_url        TEXT,
    error             TEXT,
    cost_usd          DOUBLE PRECISION,
    cost_estimated    BOOLEAN          NOT NULL DEFAULT false,
    -- Origin: who asked and where the answer goes. All NULL for the CLI.
    guild_id          BIGINT,
    channel_id        BIGINT,
    user_id           BIGINT,
    message_id        BIGINT,
    application_id    BIGINT,
    interaction_token TEXT,  -- a secret for 15 minutes; cleared once delivered
    token_expires_at  TIMESTAMPTZ,
    filesize_limit    BIGINT
);

-- What a restart resumes; partial, so it holds only live jobs. The WHERE is
-- storage/columns.py's UNFINISHED_WHERE (a test checks the planner uses it).
CREATE INDEX jobs_unfinished ON jobs (created_at)
    WHERE state NOT IN ('cancelled', 'delivered', 'failed');

CREATE INDEX jobs_request_id ON jobs (request_id);

-- user_id first so "my jobs" works both within one guild and across all of them.
CREATE INDEX jobs_user ON jobs (user_id, guild_id, created_at);

CREATE INDEX jobs_parent_id ON jobs (parent_id);

-- A reaction names only its message: which job posted it (reaction rerolls).
CREATE INDEX jobs_message_id ON jobs (message_id) WHERE message_id IS NOT NULL;

-- The scheduler's estimate reads the newest completed jobs of one model.
CREATE INDEX jobs_model_completed ON jobs (model, completed_at)
    WHERE completed_at IS NOT NULL;
