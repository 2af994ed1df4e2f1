-- 0001: one row per image request, from the first write (before RunComfy hears
-- of it) to the image being delivered.
--
-- Datetimes are TEXT, UTC ISO-8601 with microseconds and "+00:00"
-- (2024-05-01T12:00:00.000000+00:00). storage/sqlite.py writes every one through
-- a single function, so text order is time order (the lease and timing queries
-- compare them as text) and the file stays readable with the sqlite3 shell.
--
-- Discord snowflakes are 64-bit and fit SQLite's INTEGER (signed 64-bit).
-- `state` has no CHECK constraint on purpose: SQLite cannot alter one, so a new
-- JobState would need a table rebuild; the JobState enum validates on read.

CREATE TABLE jobs (
    -- AUTOINCREMENT: an id is never handed out twice, even after the newest row
    -- is deleted, so an old reroll button can never reach someone else's job.
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id        TEXT,
    parent_id         INTEGER REFERENCES jobs (id) ON DELETE SET NULL,
    model             TEXT    NOT NULL,
    prompt            TEXT    NOT NULL,
    aspect_ratio      TEXT    NOT NULL,
    seed              INTEGER NOT NULL,
    state             TEXT    NOT NULL,
    queue_position    INTEGER,
    created_at        TEXT    NOT NULL,
    queued_at         TEXT,
    started_at        TEXT,
    completed_at      TEXT,
    finished_at       TEXT,
    updated_at        TEXT    NOT NULL,
    next_poll_at      TEXT,
    poll_count        INTEGER NOT NULL DEFAULT 0,
    result_url        TEXT,
    error             TEXT,
    cost_usd          REAL,
    cost_estimated    INTEGER NOT NULL DEFAULT 0 CHECK (cost_estimated IN (0, 1)),
    -- Origin: who asked and where the answer goes. All NULL for the CLI.
    guild_id          INTEGER,
    channel_id        INTEGER,
    user_id           INTEGER,
    message_id        INTEGER,
    application_id    INTEGER,
    interaction_token TEXT,  -- a secret for 15 minutes; cleared once delivered
    token_expires_at  TEXT,
    filesize_limit    INTEGER
);

-- What a restart resumes. Partial, so it holds only live jobs however many
-- finished ones pile up; the WHERE must stay word for word the one in
-- storage/sqlite.py for the planner to use it (a test checks the plan).
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
