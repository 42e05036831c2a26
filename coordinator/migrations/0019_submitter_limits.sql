-- Limits per submitter (`coordinator/src/allowance.rs`): what each job
-- holds for its submitter's `max_stored_bytes`, and the key of the
-- `api-key` file's admin kept unrevocable.

-- The bytes a job holds for its submitter's limit, fixed at submission:
-- its module's size plus its input's size (a job split by its module) or
-- the total size of the unit inputs it listed. Counted per job, so a
-- module two jobs share counts twice; only jobs still splitting, running
-- or reducing count towards the limit.
ALTER TABLE jobs ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0 CHECK (stored_bytes >= 0);

-- Jobs from before this migration: the same sum, for the unfinished ones
-- (ended jobs never count again).
UPDATE jobs SET stored_bytes =
      COALESCE((SELECT b.size FROM blobs b WHERE b.hash = jobs.module), 0)
    + CASE WHEN jobs.input IS NOT NULL
           THEN COALESCE((SELECT b.size FROM blobs b WHERE b.hash = jobs.input), 0)
           ELSE (SELECT COALESCE(SUM(LENGTH(u.input)), 0) FROM units u WHERE u.job_id = jobs.id)
      END
WHERE state IN ('splitting', 'running', 'reducing');

-- The admin named `admin` holds the key of the coordinator's `api-key`
-- file (or `--api-key`): revoking it would lock the operator out of the
-- API until the file changed anyway. Its key is changed by changing the
-- file and restarting, never by a revocation, whoever writes.
CREATE TRIGGER submitters_file_admin_guard BEFORE UPDATE OF revoked_ms, admin ON submitters
WHEN OLD.name = 'admin' AND (NEW.revoked_ms IS NOT NULL OR NOT NEW.admin)
BEGIN
    SELECT RAISE(ABORT, 'invariant: the admin of the api-key file cannot be revoked nor lose its admin right');
END;
