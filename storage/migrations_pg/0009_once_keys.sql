-- 0009: "this happened already" keys shared by every process
-- (storage/migrations/0008_once_keys.sql), plus an index for the lease
-- scans: each process renews its own live jobs and looks for orphans
-- (jobs whose holder stopped renewing) every few seconds.
CREATE TABLE once_keys (
    key TEXT COLLATE "C" PRIMARY KEY,
    at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX once_keys_at ON once_keys (at);
CREATE INDEX jobs_live_leases ON jobs (lease_owner, lease_until)
    WHERE state NOT IN ('cancelled', 'delivered', 'failed', 'undeliverable') OR deliver_at IS NOT NULL;
