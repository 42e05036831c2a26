-- The dashboard's throughput chart: results returned per minute over the
-- last hour, read as one range of this index instead of a scan of every
-- replica. Partial: a replica gets its entry once, when its result comes
-- back (leases in flight have no returned_ms and cost nothing here).
CREATE INDEX replicas_returned ON replicas (returned_ms) WHERE returned_ms IS NOT NULL;
