-- 0005: usage that outlives the job rows it was counted from.
--
-- Finished jobs are deleted after JOB_RETENTION_DAYS (storage/retention.py),
-- but `/imagine-admin usage` and the whole-bot budget must not forget what
-- was made and spent. Every row deleted from `jobs` that had reached
-- `completed` is folded into one row per (server, member, UTC day) here, by
-- the trigger below: the fold is part of the DELETE statement itself, so it
-- commits or rolls back with it and no other coroutine's statement on the
-- shared connection can end up inside a prune's transaction.
--
-- guild_id and user_id are 0 for jobs without them (the CLI): snowflakes are
-- never 0, and a NULL in a primary key would make every such row distinct.
-- Costs are summed as integer billionths of a dollar, so a total is exact
-- whatever order rows are added in, and a usage report reads the same before
-- and after a prune (storage/retention.py sums live rows the same way).

CREATE TABLE usage_totals (
    guild_id     INTEGER NOT NULL,
    user_id      INTEGER NOT NULL,
    day          TEXT    NOT NULL,  -- YYYY-MM-DD of completed_at, UTC
    images       INTEGER NOT NULL,
    cost_nanousd INTEGER NOT NULL,  -- cost_usd × 10^9, rounded per job; unpriced jobs add 0
    estimated    INTEGER NOT NULL,  -- images whose cost was an estimate
    unpriced     INTEGER NOT NULL,  -- images with no cost at all
    PRIMARY KEY (guild_id, day, user_id)
) WITHOUT ROWID;

CREATE TRIGGER jobs_fold_usage AFTER DELETE ON jobs
WHEN old.completed_at IS NOT NULL
BEGIN
    INSERT INTO usage_totals (guild_id, user_id, day, images, cost_nanousd, estimated, unpriced)
    VALUES (
        coalesce(old.guild_id, 0),
        coalesce(old.user_id, 0),
        substr(old.completed_at, 1, 10),
        1,
        CAST(round(coalesce(old.cost_usd, 0) * 1e9) AS INTEGER),
        old.cost_estimated AND old.cost_usd IS NOT NULL,
        old.cost_usd IS NULL
    )
    ON CONFLICT (guild_id, day, user_id) DO UPDATE SET
        images = images + excluded.images,
        cost_nanousd = cost_nanousd + excluded.cost_nanousd,
        estimated = estimated + excluded.estimated,
        unpriced = unpriced + excluded.unpriced;
END;
