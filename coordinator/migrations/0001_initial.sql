-- The first schema. Migrations are append-only: change the schema in a new
-- file, never by editing this one.
--
-- Times are integer milliseconds since the Unix epoch; ids of jobs and
-- workers are hyphenated UUID text; hashes are sha256 hex. The SQL is kept to
-- what SQLite and PostgreSQL both accept.

-- Content-addressed bytes: modules, job inputs, job outputs.
CREATE TABLE blobs (
    hash        TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    bytes       BLOB NOT NULL,
    created_ms  BIGINT NOT NULL
);

CREATE TABLE workers (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    -- sha256 of the token; the token itself is never stored.
    token_hash         TEXT NOT NULL UNIQUE,
    arch               TEXT NOT NULL,
    os                 TEXT NOT NULL,
    engine             TEXT NOT NULL,
    slots              INTEGER NOT NULL,
    created_ms         BIGINT NOT NULL,
    last_seen_ms       BIGINT NOT NULL,
    valid_count        BIGINT NOT NULL DEFAULT 0,
    invalid_count      BIGINT NOT NULL DEFAULT 0,
    error_count        BIGINT NOT NULL DEFAULT 0,
    timeout_count      BIGINT NOT NULL DEFAULT 0,
    consecutive_valid  BIGINT NOT NULL DEFAULT 0,
    -- The agreed fuel of every valid replica this worker returned.
    credit             BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    module          TEXT NOT NULL REFERENCES blobs(hash),
    input           TEXT REFERENCES blobs(hash),
    -- splitting -> running -> reducing -> done, or failed / cancelled
    state           TEXT NOT NULL,
    fuel            BIGINT NOT NULL,
    memory_bytes    BIGINT NOT NULL,
    output_bytes    BIGINT NOT NULL,
    lease_secs      BIGINT NOT NULL,
    quorum          INTEGER NOT NULL,
    max_replicas    INTEGER NOT NULL,
    units_total     BIGINT NOT NULL DEFAULT 0,
    units_accepted  BIGINT NOT NULL DEFAULT 0,
    units_failed    BIGINT NOT NULL DEFAULT 0,
    output          TEXT REFERENCES blobs(hash),
    error           TEXT,
    created_ms      BIGINT NOT NULL,
    finished_ms     BIGINT
);

CREATE TABLE units (
    id                INTEGER PRIMARY KEY,
    job_id            TEXT NOT NULL REFERENCES jobs(id),
    idx               BIGINT NOT NULL,
    input             BLOB NOT NULL,
    -- open -> accepted | failed
    state             TEXT NOT NULL DEFAULT 'open',
    -- Replicas to hand out now; the scheduler takes units with needed > 0.
    needed            INTEGER NOT NULL,
    -- The CPU architecture of the unit's replicas, fixed by the first
    -- lease: results are compared within one architecture.
    arch              TEXT,
    accepted_replica  BIGINT,
    error             TEXT,
    UNIQUE (job_id, idx)
);

-- What the scheduler scans: wanted units, oldest first.
CREATE INDEX units_wanted ON units (id) WHERE needed > 0;

CREATE TABLE replicas (
    id            INTEGER PRIMARY KEY,
    unit_id       BIGINT NOT NULL REFERENCES units(id),
    worker_id     TEXT NOT NULL REFERENCES workers(id),
    -- in_progress -> returned -> valid | invalid, or errored / timed_out
    state         TEXT NOT NULL,
    leased_ms     BIGINT NOT NULL,
    deadline_ms   BIGINT NOT NULL,
    returned_ms   BIGINT,
    output        BLOB,
    output_hash   TEXT,
    fuel_used     BIGINT,
    failure_kind  TEXT,
    message       TEXT,
    -- A worker never holds two replicas of one unit.
    UNIQUE (unit_id, worker_id)
);

CREATE INDEX replicas_leases ON replicas (deadline_ms) WHERE state = 'in_progress';
CREATE INDEX replicas_by_worker ON replicas (worker_id, state);
