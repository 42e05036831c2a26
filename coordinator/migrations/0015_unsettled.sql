-- Settling's bound of rounds (store/settling.rs, MAX_ROUNDS): a
-- transaction whose chain of backtracking and restoring is longer stops
-- there instead of failing, and marks the units it had yet to settle. The
-- lease expiry round settles the marked ones and clears the mark.
ALTER TABLE units ADD COLUMN unsettled BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX units_unsettled ON units (id) WHERE unsettled;
