-- 0007: what the polling policy learned that finished jobs cannot give back.
--
-- Queue and run times are rebuilt at every start from the jobs table
-- (recent_timings); the queue's speed (seconds per queue position, learned
-- from positions counting down) is not in any job row, so without this table
-- every restart polls queued jobs as if the queue's pace were unknown.
-- One row per model; the newest value wins.
CREATE TABLE polling_memory (
    model                TEXT PRIMARY KEY,
    seconds_per_position REAL NOT NULL CHECK (seconds_per_position > 0),
    updated_at           TEXT NOT NULL
);
