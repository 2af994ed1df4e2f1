-- 0003: community servers. Per-server settings and lists, deleted results,
-- and the indexes that admission control and usage reports read.
--
-- A job may now also be in state 'waiting' (accepted by the bot, waiting for
-- one of its server's slots, nothing sent upstream). `state` has no CHECK
-- constraint (see 0001), so no table rebuild is needed; 'waiting' is not a
-- final state, so jobs_unfinished already holds those rows and a restart
-- finds them.

-- Set when a member (or a moderator) deleted the result message with its button.
ALTER TABLE jobs ADD COLUMN deleted_at TEXT;

-- One row per server that changed something. NULL means "the default", so a
-- default changed in code reaches every server that never chose otherwise.
CREATE TABLE guild_settings (
    guild_id             INTEGER PRIMARY KEY,
    default_aspect_ratio TEXT,
    member_concurrent    INTEGER CHECK (member_concurrent >= 1),
    member_daily         INTEGER CHECK (member_daily >= 1),
    guild_concurrent     INTEGER CHECK (guild_concurrent >= 1),
    admins_bypass        INTEGER CHECK (admins_bypass IN (0, 1)),
    reaction_reroll      INTEGER CHECK (reaction_reroll IN (0, 1)),
    show_cost            INTEGER CHECK (show_cost IN (0, 1)),
    updated_at           TEXT    NOT NULL,
    updated_by           INTEGER
);

-- No rows for a server: /imagine works in every channel.
CREATE TABLE guild_allowed_channels (
    guild_id   INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    added_at   TEXT    NOT NULL,
    PRIMARY KEY (guild_id, channel_id)
) WITHOUT ROWID;

-- Terms are stored already normalised (the cog's job), so a duplicate in
-- another spelling is the same row.
CREATE TABLE guild_banned_terms (
    guild_id INTEGER NOT NULL,
    term     TEXT    NOT NULL,
    added_at TEXT    NOT NULL,
    PRIMARY KEY (guild_id, term)
) WITHOUT ROWID;

-- A server's live jobs, oldest first: slots in use, the waiting line, /imagine-queue.
-- The WHERE must stay word for word the one in storage/sqlite.py.
CREATE INDEX jobs_guild_unfinished ON jobs (guild_id, created_at)
    WHERE state NOT IN ('cancelled', 'delivered', 'failed');

-- /imagine-admin usage: a server's images by completion time.
CREATE INDEX jobs_guild_completed ON jobs (guild_id, completed_at)
    WHERE completed_at IS NOT NULL;
