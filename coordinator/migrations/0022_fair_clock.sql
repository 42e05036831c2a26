-- Fair share's clock (issue 13 review): the least pass a lease batch
-- served a submitter from. A submitter's pass below it is raised to it
-- when it is next served (`fairshare::lifted`), whatever brought it back:
-- a new job, units that timed out and want replicas again, or a job
-- whose units no worker could run (pinned to another architecture,
-- waiting for a seasoned vote) while its pass stood still. Migration
-- 0018's triggers lifted a submitter only when a job started running and
-- it had no other job with wanted units, so such a stuck job let its
-- submitter, and anyone lifted to its stale pass, bank idle time.
CREATE TABLE fair_clock (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    pass  DOUBLE PRECISION NOT NULL DEFAULT 0
);
-- On a database that has submitters at work, it starts at the least of
-- their passes (no one is served from below that anyway).
INSERT INTO fair_clock (id, pass)
SELECT 1, COALESCE(MIN(s.pass), 0) FROM submitters s
WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.submitter_id = s.id AND j.state = 'running');

-- The one row stays.
CREATE TRIGGER fair_clock_kept BEFORE DELETE ON fair_clock
BEGIN
    SELECT RAISE(ABORT, 'invariant: the fair-share clock row is never deleted');
END;

-- The clock only goes forward: a writer that set it back would let every
-- submitter behind it bank the difference.
CREATE TRIGGER fair_clock_forward BEFORE UPDATE OF pass ON fair_clock
WHEN NEW.pass < OLD.pass
BEGIN
    SELECT RAISE(ABORT, 'invariant: the fair-share clock never goes back');
END;

-- The triggers keep only the job's own lift: a job that starts running
-- starts from the least pass of its submitter's other jobs at work at its
-- priority (passes of one submitter's jobs are compared only with each
-- other). The two bodies are the same.
DROP TRIGGER jobs_start_pass;
DROP TRIGGER jobs_start_pass_insert;

CREATE TRIGGER jobs_start_pass AFTER UPDATE OF state ON jobs
WHEN NEW.state = 'running' AND OLD.state <> 'running'
BEGIN
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
    UPDATE jobs SET pass = MAX(pass, COALESCE(
        (SELECT MIN(j.pass) FROM jobs j
          WHERE j.submitter_id = NEW.submitter_id AND j.state = 'running' AND j.id <> NEW.id
            AND j.priority = NEW.priority
            AND EXISTS (SELECT 1 FROM units u WHERE u.job_id = j.id AND u.needed > 0)),
        pass))
    WHERE id = NEW.id;
END;
