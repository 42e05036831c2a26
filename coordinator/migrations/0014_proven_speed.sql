-- Heartbeats (issue 12, fault 3): a worker's proven speed, in fuel per
-- second: the fastest of its valid results (fuel over the time from lease
-- to return), kept as valid judgements are written. NULL: no valid result
-- yet. A heartbeat's progress is believed up to twice this speed, and no
-- lease is extended past twice the time its job's fuel limit takes at it.
ALTER TABLE workers ADD COLUMN proven_fuel_per_s BIGINT;
