-- Liveness: a unit can neither stay open forever nor lose an honest vote
-- for good (issue 12, fault 1).
--
-- A replica discarded by backtracking remembers the invalid judgement that
-- caught its worker. If that judgement is later overturned (its unit was
-- reopened and the worker's result judged valid after all: it had been
-- outvoted, not caught), the replicas it discarded are votes again.
ALTER TABLE replicas ADD COLUMN discarded_by INTEGER REFERENCES replicas (id);
CREATE INDEX replicas_discarded_by ON replicas (discarded_by) WHERE discarded_by IS NOT NULL;

-- When a unit that wants a replica was first seen with no active worker
-- able to take it (each has held one, or shares an account or network
-- with a worker that has). A unit starved for two lease periods fails,
-- with that reason, instead of waiting forever.
ALTER TABLE units ADD COLUMN starved_ms BIGINT;
CREATE INDEX units_starved ON units (starved_ms) WHERE starved_ms IS NOT NULL;

-- The network prefix a worker last asked for work from (when replicas go
-- to distinct networks): whether it could take a starved unit.
ALTER TABLE workers ADD COLUMN net TEXT;
