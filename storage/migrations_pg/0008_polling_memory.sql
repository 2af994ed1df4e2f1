-- 0008: the queue speed the polling policy learned (storage/migrations/0007_polling_memory.sql).
CREATE TABLE polling_memory (
    model                TEXT PRIMARY KEY,
    seconds_per_position DOUBLE PRECISION NOT NULL CHECK (seconds_per_position > 0),
    updated_at           TIMESTAMPTZ NOT NULL
);
