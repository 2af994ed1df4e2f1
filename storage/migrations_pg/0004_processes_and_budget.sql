-- 0004 (PostgreSQL only): what several bot processes sharing this database
-- need and one SQLite process does not. storage/postgres/registry.py and
-- storage/postgres/budget.py are the only writers.

-- One row per running process and the Discord shards it runs. A row whose
-- heartbeat is older than the lease is stale: it blocks nobody and is deleted
-- by the next process that registers.
CREATE TABLE processes (
    process_id   TEXT        PRIMARY KEY,
    host         TEXT        NOT NULL,
    pid          INTEGER     NOT NULL,
    shard_count  INTEGER     NOT NULL CHECK (shard_count >= 1),
    shard_ids    INTEGER[]   NOT NULL CHECK (cardinality(shard_ids) >= 1),
    started_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);

-- One token bucket per shared budget (RunComfy's requests per second). Tokens
-- are refilled lazily by whoever takes one, from the database's own clock.
-- `granted` counts every token ever handed out: the bookkeeping that shows
-- the budget was kept.
CREATE TABLE request_budget (
    name        TEXT             PRIMARY KEY,
    rate        DOUBLE PRECISION NOT NULL CHECK (rate > 0),
    capacity    DOUBLE PRECISION NOT NULL CHECK (capacity >= 1),
    tokens      DOUBLE PRECISION NOT NULL CHECK (tokens >= 0),
    refilled_at TIMESTAMPTZ      NOT NULL,
    granted     DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ      NOT NULL
);
