-- 0002: how a result reached its destination, and a lease so several
-- processes can share jobs (storage/migrations/0002_delivery_and_leases.sql).

-- "interaction", "channel_edit", "new_message" or "file"; NULL until delivered.
ALTER TABLE jobs ADD COLUMN delivery TEXT;

-- Which process works on the job, and until when: UPDATE ... WHERE the lease
-- is free or expired is the atomic claim.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until TIMESTAMPTZ;
