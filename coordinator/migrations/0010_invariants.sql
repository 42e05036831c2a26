-- Invariants in the schema, so that they hold with any number of writers
-- (several coordinators sharing one database), not only because one
-- process writes. Each is tried directly, and seen refused, by a test in
-- coordinator/tests/store/invariants.rs.

-- No two replicas of a unit go to one account, nor to one network where
-- networks are recorded: the placement policy's keys. The (account, unit)
-- order also serves the lease batch's range scan of which units the
-- requesting accounts hold, as the index it replaces did.
DROP INDEX replicas_by_account_unit;
CREATE UNIQUE INDEX replicas_one_per_account ON replicas (account_id, unit_id);
DROP INDEX replicas_by_net_unit;
CREATE UNIQUE INDEX replicas_one_per_net ON replicas (net, unit_id) WHERE net IS NOT NULL;

-- Counters never go below zero or past their limit. SQLite cannot add a
-- CHECK to an existing table, so guards are triggers that abort the
-- statement (and with it the transaction); their messages start with
-- "invariant:" so that callers can tell them from other failures
-- (store::Error::Invariant).
--
-- First, repair what earlier code could leave: backtracking refunded the
-- fuel of valid replicas of jobs validated with `compare`, which had been
-- credited nothing, so credit could be negative. The guards on counters
-- that such data could reach refuse only a move further below zero, so a
-- row the repair missed still takes credit and results.
UPDATE workers SET credit = 0 WHERE credit < 0;
UPDATE accounts SET credit = 0 WHERE credit < 0;
UPDATE workers SET valid_count = 0 WHERE valid_count < 0;
UPDATE units SET needed = 0 WHERE needed < 0;
CREATE TRIGGER units_needed_guard BEFORE UPDATE OF needed ON units
WHEN NEW.needed < 0
BEGIN
    SELECT RAISE(ABORT, 'invariant: units.needed cannot go below zero');
END;

CREATE TRIGGER units_needed_insert_guard BEFORE INSERT ON units
WHEN NEW.needed < 0
BEGIN
    SELECT RAISE(ABORT, 'invariant: units.needed cannot go below zero');
END;

CREATE TRIGGER jobs_counts_guard
BEFORE UPDATE OF units_accepted, units_failed, units_total, replicas_leased, state ON jobs
WHEN (NEW.units_accepted < 0 AND NEW.units_accepted < OLD.units_accepted)
  OR (NEW.units_failed < 0 AND NEW.units_failed < OLD.units_failed)
  OR (NEW.replicas_leased < 0 AND NEW.replicas_leased < OLD.replicas_leased)
  OR (NEW.state <> 'splitting'
      AND NEW.units_accepted + NEW.units_failed > NEW.units_total
      AND (NEW.units_accepted + NEW.units_failed > OLD.units_accepted + OLD.units_failed
           OR NEW.units_total < OLD.units_total))
BEGIN
    SELECT RAISE(ABORT, 'invariant: a job counts at most its units settled, never below zero');
END;

-- A worker leases at most its daily quota (0: a worker from before quotas,
-- which has the coordinator's full quota). A quota halved below what was
-- leased today stops further leases; it does not undo them.
CREATE TRIGGER workers_quota_guard BEFORE UPDATE OF leased_today ON workers
WHEN NEW.quota > 0 AND NEW.leased_today > NEW.quota
 AND (NEW.quota_day <> OLD.quota_day OR NEW.leased_today > OLD.leased_today)
BEGIN
    SELECT RAISE(ABORT, 'invariant: a worker leases at most its daily quota');
END;

CREATE TRIGGER workers_counters_guard
BEFORE UPDATE OF valid_count, invalid_count, error_count, timeout_count, credit ON workers
WHEN (NEW.valid_count < 0 AND NEW.valid_count < OLD.valid_count)
  OR (NEW.invalid_count < 0 AND NEW.invalid_count < OLD.invalid_count)
  OR (NEW.error_count < 0 AND NEW.error_count < OLD.error_count)
  OR (NEW.timeout_count < 0 AND NEW.timeout_count < OLD.timeout_count)
  OR (NEW.credit < 0 AND NEW.credit < OLD.credit)
BEGIN
    SELECT RAISE(ABORT, 'invariant: worker counters and credit never go below zero');
END;

CREATE TRIGGER accounts_credit_guard BEFORE UPDATE OF credit ON accounts
WHEN NEW.credit < 0 AND NEW.credit < OLD.credit
BEGIN
    SELECT RAISE(ABORT, 'invariant: account credit never goes below zero');
END;

-- Who runs a job's split or reduce: one claim per job and duty, taken over
-- only once it has expired, and renewed by every write of the duty.
CREATE TABLE claims (
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    duty        TEXT NOT NULL CHECK (duty IN ('split', 'reduce')),
    owner       TEXT NOT NULL,
    expires_ms  BIGINT NOT NULL,
    PRIMARY KEY (job_id, duty)
);
