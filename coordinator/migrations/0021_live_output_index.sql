-- Every batch upload bounds its body by the largest output limit of the
-- jobs that may still take results, before reading it (`store::body_limits`).
-- With 100 running jobs that read was 85 us, of every live job's row, on
-- each of 50,000 uploads (`bench -- coordinator --jobs 100`, statement
-- times from RUST_LOG=sqlx::query=debug); this index answers it alone.
CREATE INDEX jobs_live_output ON jobs (state, output_bytes);
