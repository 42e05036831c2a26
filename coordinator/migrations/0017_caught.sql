-- A worker is caught from the result of it judged invalid until it is
-- trusted again (`trust::Standing::caught`): it holds one lease at a time
-- meanwhile. Its own column, not "has an invalid result and is not trusted
-- now": a timeout or an error breaks a streak too, and must not send a
-- worker caught once, long ago, back to one lease.
ALTER TABLE workers ADD COLUMN caught BOOLEAN NOT NULL DEFAULT FALSE;
