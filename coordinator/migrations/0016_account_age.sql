-- The account-age rule (issue 12, Sybil resistance): with
-- `trust.min_account_age_secs` set, a unit is never settled on the votes
-- of accounts that were all younger than that when they returned them,
-- unless its job opts out.
--
-- The job's opt-out: young accounts' votes alone may settle its units.
ALTER TABLE jobs ADD COLUMN young_accounts BOOLEAN NOT NULL DEFAULT FALSE;

-- A quorum of the unit's replicas agree, but none came from a seasoned
-- account: the replica it wants next must go to a worker of an account
-- old enough (set by settling from the validator's decision, cleared when
-- the unit closes). Such a unit waits while no seasoned worker is active,
-- instead of starving.
ALTER TABLE units ADD COLUMN wants_seasoned BOOLEAN NOT NULL DEFAULT FALSE;

-- A job's status counts its units waiting for a seasoned worker: one short
-- range of this index, not a scan of the job's units.
CREATE INDEX units_wanting_seasoned ON units (job_id) WHERE wants_seasoned;
