-- Indexes for reads made per result upload and per lease batch, measured
-- with 100 running jobs (`bench -- coordinator --jobs 100`, statement
-- times from RUST_LOG=sqlx::query=debug).

-- Every batch upload bounds its body by the largest output limit of the
-- jobs that may still take results, before reading it (`store::body_limits`).
-- That read was 85 us, of every live job's row, on each of 50,000
-- uploads; this index answers it alone.
CREATE INDEX jobs_live_output ON jobs (state, output_bytes);

-- Each lease batch opens by asking, per running job, whether it has a
-- unit wanting a replica that is not waiting for a seasoned vote. With
-- `needed` and `wants_seasoned` in the index the answer is read from it
-- alone, not from that unit's row (SQLite uses a partial index as
-- covering only when the columns of its WHERE are in it). A change of
-- `needed` rewrote this index's entry before too, since its WHERE reads
-- it. The range reads by (job_id, id) use it as before.
DROP INDEX units_wanted_by_job;
CREATE INDEX units_wanted_by_job ON units (job_id, id, needed, wants_seasoned) WHERE needed > 0;
