-- Volunteer accounts, adaptive replication, backtracking, quotas and
-- recent-average credit.

CREATE TABLE accounts (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    -- sha256 of the account key, which workers present to join it.
    key_hash       TEXT NOT NULL UNIQUE,
    created_ms     BIGINT NOT NULL,
    credit         BIGINT NOT NULL DEFAULT 0,
    -- Credits granted, decayed with a half-life of 7 days to recent_ms.
    recent_credit  DOUBLE PRECISION NOT NULL DEFAULT 0,
    recent_ms      BIGINT NOT NULL DEFAULT 0
);

ALTER TABLE workers ADD COLUMN account_id TEXT REFERENCES accounts(id);
ALTER TABLE workers ADD COLUMN recent_credit DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN recent_ms BIGINT NOT NULL DEFAULT 0;
-- Leases a day: halved by each error, invalid result or timeout, doubled
-- by each valid result, between a floor and the coordinator's maximum.
ALTER TABLE workers ADD COLUMN quota BIGINT NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN quota_day BIGINT NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN leased_today BIGINT NOT NULL DEFAULT 0;
CREATE INDEX workers_by_account ON workers (account_id);

-- The account of the worker a replica went to: no two replicas of a unit
-- go to one account.
ALTER TABLE replicas ADD COLUMN account_id TEXT;
UPDATE replicas SET account_id = worker_id;
CREATE INDEX replicas_by_account_unit ON replicas (account_id, unit_id);
DROP INDEX replicas_by_worker_unit;

-- The quorum this unit needs now (NULL: its job's): 1 for a unit given to a
-- trusted worker alone, back to 2 or more for a spot check or backtracking.
ALTER TABLE units ADD COLUMN quorum INTEGER;
-- Accepted on one worker's word alone (no other replica confirmed it).
ALTER TABLE units ADD COLUMN alone BOOLEAN NOT NULL DEFAULT FALSE;

ALTER TABLE jobs ADD COLUMN adaptive BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE jobs ADD COLUMN compare BOOLEAN NOT NULL DEFAULT FALSE;
-- How often the output was produced (backtracking can reopen a done job).
ALTER TABLE jobs ADD COLUMN output_version BIGINT NOT NULL DEFAULT 0;
