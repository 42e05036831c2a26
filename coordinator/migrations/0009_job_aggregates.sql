-- What a job's dashboard page shows, kept up to date by triggers as
-- replicas and units change state, so that a page view reads a few rows
-- instead of every replica of a 100,000-unit job.

-- A job's replicas by state and failure kind ('' for none), with an
-- example message per group, for the states a replica ends in. Leasing and
-- returning, the hottest writes, stay free of trigger work: replicas in
-- progress are counted from the leases' partial index, and those awaiting
-- quorum are what is left of `jobs.replicas_leased` (kept by the lease
-- batch, one statement per job).
ALTER TABLE jobs ADD COLUMN replicas_leased BIGINT NOT NULL DEFAULT 0;

UPDATE jobs SET replicas_leased =
    (SELECT COUNT(*) FROM units u JOIN replicas r ON r.unit_id = u.id WHERE u.job_id = jobs.id);

CREATE TABLE job_outcomes (
    job_id   TEXT NOT NULL,
    state    TEXT NOT NULL,
    kind     TEXT NOT NULL,
    n        BIGINT NOT NULL,
    example  TEXT,
    PRIMARY KEY (job_id, state, kind)
);

INSERT INTO job_outcomes (job_id, state, kind, n, example)
SELECT u.job_id, r.state, COALESCE(r.failure_kind, ''), COUNT(*), MIN(r.message)
FROM replicas r JOIN units u ON u.id = r.unit_id
WHERE r.state NOT IN ('in_progress', 'returned')
GROUP BY u.job_id, r.state, COALESCE(r.failure_kind, '');

CREATE TRIGGER job_outcomes_leave AFTER UPDATE OF state, failure_kind ON replicas
WHEN OLD.state NOT IN ('in_progress', 'returned')
 AND (OLD.state IS NOT NEW.state OR OLD.failure_kind IS NOT NEW.failure_kind)
BEGIN
    UPDATE job_outcomes SET n = n - 1
    WHERE job_id = (SELECT job_id FROM units WHERE id = OLD.unit_id)
      AND state = OLD.state AND kind = COALESCE(OLD.failure_kind, '');
END;

CREATE TRIGGER job_outcomes_enter AFTER UPDATE OF state, failure_kind ON replicas
WHEN NEW.state NOT IN ('in_progress', 'returned')
 AND (OLD.state IS NOT NEW.state OR OLD.failure_kind IS NOT NEW.failure_kind)
BEGIN
    INSERT INTO job_outcomes (job_id, state, kind, n, example)
    VALUES ((SELECT job_id FROM units WHERE id = NEW.unit_id), NEW.state,
            COALESCE(NEW.failure_kind, ''), 1, NEW.message)
    ON CONFLICT (job_id, state, kind)
    DO UPDATE SET n = n + 1, example = COALESCE(example, excluded.example);
END;

-- A job's accepted units per second in which their accepted result came
-- back (a unit reopened by backtracking is taken out again).
CREATE TABLE job_accepted_seconds (
    job_id  TEXT NOT NULL,
    second  BIGINT NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (job_id, second)
);

INSERT INTO job_accepted_seconds (job_id, second, n)
SELECT u.job_id, COALESCE(r.returned_ms, 0) / 1000, COUNT(*)
FROM units u JOIN replicas r ON r.id = u.accepted_replica
WHERE u.state = 'accepted'
GROUP BY u.job_id, COALESCE(r.returned_ms, 0) / 1000;

CREATE TRIGGER job_accepted_up AFTER UPDATE OF state ON units
WHEN NEW.state = 'accepted' AND OLD.state IS NOT 'accepted'
BEGIN
    INSERT INTO job_accepted_seconds (job_id, second, n)
    VALUES (NEW.job_id,
            COALESCE((SELECT returned_ms FROM replicas WHERE id = NEW.accepted_replica), 0) / 1000,
            1)
    ON CONFLICT (job_id, second) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER job_accepted_down AFTER UPDATE OF state ON units
WHEN OLD.state = 'accepted' AND NEW.state IS NOT 'accepted'
BEGIN
    UPDATE job_accepted_seconds SET n = n - 1
    WHERE job_id = OLD.job_id
      AND second = COALESCE((SELECT returned_ms FROM replicas WHERE id = OLD.accepted_replica), 0) / 1000;
END;
