-- Which units of a range a batch of requesting workers already holds: one
-- short index range per worker, instead of every replica each worker ever
-- returned (measured: the lease batch slowed as workers' histories grew).
CREATE INDEX replicas_by_worker_unit ON replicas (worker_id, unit_id);
