-- 0009: several models, image input, several images per job (issue 16).
--
-- `count` images per job: quotas, the budget and usage reports count images,
-- not jobs, so a 4-image job weighs 4. `result_urls` keeps every image's URL
-- (a JSON array) beside `result_url`, the first one, which older code reads.
-- An edit job keeps the URL it sends RunComfy and when that URL expires
-- (Discord's attachment links carry their expiry), and its input image's
-- verified bytes in `job_inputs`, deleted with the job.
ALTER TABLE jobs ADD COLUMN count INTEGER NOT NULL DEFAULT 1 CHECK (count BETWEEN 1 AND 10);
ALTER TABLE jobs ADD COLUMN result_urls TEXT;
ALTER TABLE jobs ADD COLUMN input_url TEXT;
ALTER TABLE jobs ADD COLUMN input_expires_at TEXT;

CREATE TABLE job_inputs (
    job_id       INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    content_type TEXT    NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    data         BLOB    NOT NULL
);

-- A server's models: NULL means every model the bot offers, and its default.
ALTER TABLE guild_settings ADD COLUMN allowed_models TEXT;  -- model ids, space-separated
ALTER TABLE guild_settings ADD COLUMN default_model TEXT;

-- The fold of pruned jobs counts their images.
DROP TRIGGER jobs_fold_usage;
CREATE TRIGGER jobs_fold_usage AFTER DELETE ON jobs
WHEN old.completed_at IS NOT NULL
BEGIN
    INSERT INTO usage_totals (guild_id, user_id, day, images, cost_nanousd, estimated, unpriced)
    VALUES (
        coalesce(old.guild_id, 0),
        coalesce(old.user_id, 0),
        substr(old.completed_at, 1, 10),
        old.count,
        CAST(round(coalesce(old.cost_usd, 0) * 1e9) AS INTEGER),
        (old.cost_estimated AND old.cost_usd IS NOT NULL) * old.count,
        (old.cost_usd IS NULL) * old.count
    )
    ON CONFLICT (guild_id, day, user_id) DO UPDATE SET
        images = images + excluded.images,
        cost_nanousd = cost_nanousd + excluded.cost_nanousd,
        estimated = estimated + excluded.estimated,
        unpriced = unpriced + excluded.unpriced;
END;
