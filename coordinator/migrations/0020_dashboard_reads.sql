-- Indexes for what the dashboard reads (issue 13, "what a scientist needs
-- to see"), so that its reads stay bounded as jobs pile up.

-- The Submitters section reads the last hour's acceptances of the jobs
-- that were not finished an hour ago: `finished_ms IS NULL OR finished_ms
-- >= ?`, two ranges of this index instead of a scan of every job ever
-- submitted. (A job that backtracking reopens has its finished_ms cleared.)
CREATE INDEX jobs_by_finished ON jobs (finished_ms);

-- The overview lists the newest jobs (`ORDER BY created_ms DESC LIMIT
-- 100`), as does `GET /api/v1/jobs`: the end of this index instead of a
-- sort of every job.
CREATE INDEX jobs_by_created ON jobs (created_ms);
