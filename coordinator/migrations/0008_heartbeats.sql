-- Heartbeats: how far each running replica has got (fuel used, reported by
-- its worker) and when it said so; whether a worker is paused; and per job
-- the fuel of its accepted units, whose mean is the estimate that turns a
-- running unit's fuel into a percentage.
ALTER TABLE replicas ADD COLUMN progress_fuel BIGINT;
ALTER TABLE replicas ADD COLUMN progress_ms BIGINT;
ALTER TABLE workers ADD COLUMN paused BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE jobs ADD COLUMN fuel_sampled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN fuel_samples BIGINT NOT NULL DEFAULT 0;
