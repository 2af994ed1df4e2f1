-- 0002: how a result reached its destination, and a lease for a future
-- multi-process store.
--
-- Kept apart from 0001 so the upgrade path (ALTER on a file that already holds
-- rows) runs from the first release on; tests/storage/test_migrations.py
-- builds a version-1 file by hand and upgrades it.

-- "interaction", "channel_edit", "new_message" or "file"; NULL until delivered.
ALTER TABLE jobs ADD COLUMN delivery TEXT;

-- Which process works on the job, and until when. One process today, so a
-- lease is cheap bookkeeping; with several, UPDATE ... WHERE the lease is free
-- or expired is the atomic claim.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until TEXT;
