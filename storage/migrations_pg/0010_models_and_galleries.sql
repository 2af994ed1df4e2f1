-- 0010: several models, image input, several images per job (storage/migrations/0009_models_and_galleries.sql).
ALTER TABLE jobs ADD COLUMN count INTEGER NOT NULL DEFAULT 1 CHECK (count BETWEEN 1 AND 10);
ALTER TABLE jobs ADD COLUMN result_urls TEXT;
ALTER TABLE jobs ADD COLUMN input_url TEXT;
ALTER TABLE jobs ADD COLUMN input_expires_at TIMESTAMPTZ;

CREATE TABLE job_inputs (
    job_id       BIGINT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    content_type TEXT    NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    data         BYTEA   NOT NULL
);

ALTER TABLE guild_settings ADD COLUMN allowed_models TEXT;
ALTER TABLE guild_settings ADD COLUMN default_model TEXT;

CREATE OR REPLACE FUNCTION jobs_fold_usage() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO usage_totals AS total (guild_id, user_id, day, images, cost_nanousd, estimated, unpriced)
    SELECT coalesce(gone.guild_id, 0),
           coalesce(gone.user_id, 0),
           (gone.completed_at AT TIME ZONE 'UTC')::date,
           sum(gone.count),
           sum(nanousd(gone.cost_usd)),
           coalesce(sum(gone.count) FILTER (WHERE gone.cost_estimated AND gone.cost_usd IS NOT NULL), 0),
           coalesce(sum(gone.count) FILTER (WHERE gone.cost_usd IS NULL), 0)
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
