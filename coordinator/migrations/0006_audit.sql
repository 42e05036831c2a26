-- An adaptive job is audited once before its output is produced: the last
-- unit each worker vouched for alone gets a second replica.
ALTER TABLE jobs ADD COLUMN audited BOOLEAN NOT NULL DEFAULT FALSE;
