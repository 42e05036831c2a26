-- Many scientists on one coordinator: submitters with their own keys and
-- shares, jobs that belong to one and carry a priority, and what the
-- fair-share scheduler keeps between lease batches.

-- Who submits jobs. A key is kept only as its sha256. `share` is what the
-- submitter is owed of the volunteers' fuel relative to the others while
-- each has work; a revoked submitter's key is refused from then on, and
-- its jobs stay (an admin may cancel them). The admin named by the
-- coordinator's `api-key` file is created at start (`Store::ensure_admin`).
CREATE TABLE submitters (
    id                 INTEGER PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    key_hash           TEXT NOT NULL UNIQUE,
    admin              BOOLEAN NOT NULL DEFAULT FALSE,
    share              BIGINT NOT NULL DEFAULT 1 CHECK (share >= 1 AND share <= 1000000),
    -- Limits of this submitter; NULL: the coordinator's default.
    max_units          BIGINT CHECK (max_units IS NULL OR max_units >= 0),
    max_stored_bytes   BIGINT CHECK (max_stored_bytes IS NULL OR max_stored_bytes >= 0),
    created_ms         BIGINT NOT NULL,
    revoked_ms         BIGINT,
    -- Fair share's virtual time: the fuel charged to its jobs over its
    -- share, lifted to the least of the active submitters' when it becomes
    -- active again (so idle time is not banked).
    pass               DOUBLE PRECISION NOT NULL DEFAULT 0
);

-- NULL only for jobs from before submitters, until the coordinator's start
-- gives them to the admin of the `api-key` file.
ALTER TABLE jobs ADD COLUMN submitter_id BIGINT REFERENCES submitters(id);
-- Within one submitter, higher priorities are leased first.
ALTER TABLE jobs ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
-- The fuel charged to this job: equal priorities of one submitter share by it.
ALTER TABLE jobs ADD COLUMN pass DOUBLE PRECISION NOT NULL DEFAULT 0;

-- What the lease batch reads: the running jobs, and each one's wanted
-- units in order (a per-job cursor, not a scan across jobs).
CREATE INDEX jobs_running ON jobs (id) WHERE state = 'running';
CREATE INDEX units_wanted_by_job ON units (job_id, id) WHERE needed > 0;
CREATE INDEX jobs_by_submitter ON jobs (submitter_id, state);

-- A job that starts running (or runs again) starts from the least pass of
-- its submitter's other jobs at work at its priority; a submitter with no
-- other job at work (running, with units wanting replicas) starts from the
-- least pass of the submitters at work, or, if none is, from the greatest
-- pass of all: neither banks the time it had nothing to run, and one that
-- was light long ago does not starve a heavy one by starting first. Here,
-- not in the code that changes states, so that every way into `running`
-- (a submission of units, the end of a split, backtracking reopening a
-- finished job) does it. The two triggers' bodies are the same.
CREATE TRIGGER jobs_start_pass AFTER UPDATE OF state ON jobs
WHEN NEW.state = 'running' AND OLD.state <> 'running'
BEGIN
    UPDATE submitters SET pass = MAX(pass, COALESCE(
        -- The least pass of the other submitters with work now...
        (SELECT MIN(s.pass) FROM submitters s
          WHERE s.id <> NEW.submitter_id
            AND EXISTS (SELECT 1 FROM jobs j
                        WHERE j.submitter_id = s.id AND j.state = 'running'
                          AND EXISTS (SELECT 1 FROM units u WHERE u.job_id = j.id AND u.needed > 0))),
        -- ...or, with nobody at work, the greatest: all start level.
        (SELECT MAX(s.pass) FROM submitters s WHERE s.id <> NEW.submitter_id),
        pass))
    WHERE id = NEW.submitter_id
      AND NOT EXISTS (SELECT 1 FROM jobs j
                      WHERE j.submitter_id = NEW.submitter_id AND j.state = 'running' AND j.id <> NEW.id
                        AND EXISTS (SELECT 1 FROM units u WHERE u.job_id = j.id AND u.needed > 0));
    UPDATE jobs SET pass = MAX(pass, COALESCE(
        (SELECT MIN(j.pass) FROM jobs j
          WHERE j.submitter_id = NEW.submitter_id AND j.state = 'running' AND j.id <> NEW.id
            AND j.priority = NEW.priority
            AND EXISTS (SELECT 1 FROM units u WHERE u.job_id = j.id AND u.needed > 0)),
        pass))
    WHERE id = NEW.id;
END;

CREATE TRIGGER jobs_start_pass_insert AFTER INSERT ON jobs
WHEN NEW.state = 'running'
BEGIN
    UPDATE submitters SET pass = MAX(pass, COALESCE(
        -- The least pass of the other submitters with work now...
        (SELECT MIN(s.pass) FROM submitters s
          WHERE s.id <> NEW.submitter_id
            AND EXISTS (SELECT 1 FROM jobs j
                        WHERE j.submitter_id = s.id AND j.state = 'running'
                          AND EXISTS (SELECT 1 FROM units u WHERE u.job_id = j.id AND u.needed > 0))),
        -- ...or, with nobody at work, the greatest: all start level.
        (SELECT MAX(s.pass) FROM submitters s WHERE s.id <> NEW.submitter_id),
        pass))
    WHERE id = NEW.submitter_id
      AND NOT EXISTS (SELECT 1 FROM jobs j
                      WHERE j.submitter_id = NEW.submitter_id AND j.state = 'running' AND j.id <> NEW.id
                        AND EXISTS (SELECT 1 FROM units u WHERE u.job_id = j.id AND u.needed > 0));
    UPDATE jobs SET pass = MAX(pass, COALESCE(
        (SELECT MIN(j.pass) FROM jobs j
          WHERE j.submitter_id = NEW.submitter_id AND j.state = 'running' AND j.id <> NEW.id
            AND j.priority = NEW.priority
            AND EXISTS (SELECT 1 FROM units u WHERE u.job_id = j.id AND u.needed > 0)),
        pass))
    WHERE id = NEW.id;
END;
