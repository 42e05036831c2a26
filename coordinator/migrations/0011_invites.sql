-- Invite tokens for closed projects (`coordinator invites create`): with
-- `[registration] invites_only`, a worker registers only by spending one
-- use of a token. Only the token's sha256 is kept. A use is spent by the
-- conditional update `uses_left = uses_left - 1 WHERE uses_left > 0`, and
-- the CHECK refuses any write that would take it below zero, so two
-- registrations can never both spend a token's last use.
CREATE TABLE invites (
    hash        TEXT PRIMARY KEY,
    uses_left   BIGINT NOT NULL CHECK (uses_left >= 0),
    created_ms  BIGINT NOT NULL
);
