-- Operator bans (`coordinator workers ban`), and an index for `/metrics`.
-- A banned worker's token is refused at the edge on every call; these
-- guards make the ban hold whoever writes (a second coordinator, a request
-- already past the edge when the ban committed): a banned worker gets no
-- replica and returns no result. Their messages start with "invariant:" (store::Error::Invariant).
ALTER TABLE workers ADD COLUMN banned_ms BIGINT;
-- A banned account: every worker of it is banned, those that join it
-- later included (the trigger below).
ALTER TABLE accounts ADD COLUMN banned_ms BIGINT;

CREATE TRIGGER replicas_banned_lease_guard BEFORE INSERT ON replicas
WHEN (SELECT banned_ms FROM workers WHERE id = NEW.worker_id) IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'invariant: a banned worker takes no replicas');
END;

-- Only a result arriving (in_progress -> returned) is refused: backtracking
-- may later send a banned worker's old judged replica back to `returned`
-- to be judged again, which must not fail the transaction.
CREATE TRIGGER replicas_banned_result_guard BEFORE UPDATE OF state ON replicas
WHEN OLD.state = 'in_progress' AND NEW.state = 'returned'
 AND (SELECT banned_ms FROM workers WHERE id = NEW.worker_id) IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'invariant: a banned worker returns no results');
END;

CREATE TRIGGER workers_join_banned_account AFTER INSERT ON workers
WHEN NEW.account_id IS NOT NULL
 AND (SELECT banned_ms FROM accounts WHERE id = NEW.account_id) IS NOT NULL
BEGIN
    UPDATE workers SET banned_ms = (SELECT banned_ms FROM accounts WHERE id = NEW.account_id)
    WHERE id = NEW.id;
END;

-- `/metrics` counts the workers seen lately at every scrape.
CREATE INDEX workers_by_last_seen ON workers (last_seen_ms);
