-- 0003: community servers (storage/migrations/0003_community.sql). Per-server
-- settings and lists, deleted results, and the indexes that admission control
-- and usage reports read. A job may also be in state 'waiting'; no constraint
-- names the states, so nothing changes for it.

-- Set when a member (or a moderator) deleted the result message with its button.
ALTER TABLE jobs ADD COLUMN deleted_at TIMESTAMPTZ;

-- One row per server that changed something. NULL means "the default", so a
-- default changed in code reaches every server that never chose otherwise.
CREATE TABLE guild_settings (
    guild_id             BIGINT PRIMARY KEY,
    default_aspect_ratio TEXT,
    member_concurrent    INTEGER CHECK (member_concurrent >= 1),
    member_daily         INTEGER CHECK (member_daily >= 1),
    guild_concurrent     INTEGER CHECK (guild_concurrent >= 1),
    admins_bypass        BOOLEAN,
    reaction_reroll      BOOLEAN,
    show_cost            BOOLEAN,
    updated_at           TIMESTAMPTZ NOT NULL,
    updated_by           BIGINT
);

-- No rows for a server: /imagine works in every channel.
CREATE TABLE guild_allowed_channels (
    guild_id   BIGINT      NOT NULL,
    channel_id BIGINT      NOT NULL,
    added_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (guild_id, channel_id)
);

-- Terms are stored already normalised (the cog's job), so a duplicate in
-- another spelling is the same row.
CREATE TABLE guild_banned_terms (
    guild_id BIGINT      NOT NULL,
    term     TEXT        NOT NULL,
    added_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (guild_id, term)
);

-- A server's live jobs, oldest first: slots in use, the waiting line, /imagine-queue.
CREATE INDEX jobs_guild_unfinished ON jobs (guild_id, created_at)
    WHERE state NOT IN ('cancelled', 'delivered', 'failed');

-- /imagine-admin usage: a server's images by completion time.
CREATE INDEX jobs_guild_completed ON jobs (guild_id, completed_at)
    WHERE completed_at IS NOT NULL;
