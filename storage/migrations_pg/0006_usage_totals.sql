-- 0006: usage that outlives the job rows it was counted from (storage/migrations/0005_usage_totals.sql).
--
-- Finished jobs are deleted after JOB_RETENTION_DAYS (storage/postgres/reports.py's prune), but
-- `/imagine-admin usage` and the whole-bot budget must not forget what was made and spent. Every row deleted
-- from `jobs` that had reached `completed` is folded into one row per (server, member, UTC day) here, by the
-- trigger below, whoever deletes it: the fold is part of the DELETE statement, so it commits or rolls back
-- with it, and a row two processes both try to delete is deleted, and folded, once.
--
-- guild_id and user_id are 0 for jobs without them (the CLI): snowflakes are never 0, and a NULL in a primary
-- key is not allowed. Costs are summed as integer billionths of a dollar, so a total is exact whatever order
-- rows are added in, and a usage report reads the same before and after a prune (the report sums live rows
-- with the same function).

CREATE TABLE usage_totals (
    guild_id     BIGINT NOT NULL,
    user_id      BIGINT NOT NULL,
    day          DATE   NOT NULL,  -- of completed_at, UTC
    images       BIGINT NOT NULL,
    cost_nanousd BIGINT NOT NULL,  -- cost_usd × 10^9, rounded per job; unpriced jobs add 0
    estimated    BIGINT NOT NULL,  -- images whose cost was an estimate
    unpriced     BIGINT NOT NULL,  -- images with no cost at all
    PRIMARY KEY (guild_id, day, user_id)
);

-- One job's cost in billionths of a dollar, rounded as SQLite's CAST(round(coalesce(cost, 0) * 1e9) AS INTEGER)
-- rounds: in double precision, halves away from zero (PostgreSQL's round(float8) would round them to even).
-- Both backends therefore fold and report the same integers.
CREATE FUNCTION nanousd(cost_usd DOUBLE PRECISION) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT (sign(coalesce(cost_usd, 0)) * trunc(abs(coalesce(cost_usd, 0) * 1e9::float8) + 0.5::float8))::bigint
    $$;

-- One statement-level trigger: a prune batch of hundreds of rows is folded by one grouped upsert (an upsert
-- cannot touch the same row twice, hence the GROUP BY), not by one upsert per row.
CREATE FUNCTION jobs_fold_usage() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO usage_totals AS total (guild_id, user_id, day, images, cost_nanousd, estimated, unpriced)
    SELECT coalesce(gone.guild_id, 0),
           coalesce(gone.user_id, 0),
           (gone.completed_at AT TIME ZONE 'UTC')::date,
           count(*),
           sum(nanousd(gone.cost_usd)),
           count(*) FILTER (WHERE gone.cost_estimated AND gone.cost_usd IS NOT NULL),
           count(*) FILTER (WHERE gone.cost_usd IS NULL)
    FROM gone
    WHERE gone.completed_at IS NOT NULL
    GROUP BY 1, 2, 3
    ON CONFLICT (guild_id, day, user_id) DO UPDATE SET
        images = total.images + EXCLUDED.images,
        cost_nanousd = total.cost_nanousd + EXCLUDED.cost_nanousd,
        estimated = total.estimated + EXCLUDED.estimated,
        unpriced = total.unpriced + EXCLUDED.unpriced;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_fold_usage AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_fold_usage();
