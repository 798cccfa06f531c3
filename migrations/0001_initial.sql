-- compliance-orchestrator state, version 1.
-- Timestamps are ISO-8601 UTC text with microseconds (they sort as text).

-- One row per claimed input file.
CREATE TABLE inputs (
    id              INTEGER PRIMARY KEY,
    job_type        TEXT    NOT NULL CHECK (job_type IN ('tweets', 'users')),
    name            TEXT    NOT NULL,              -- file name as it was in the inbox
    out_stem        TEXT    NOT NULL,              -- outbox/<type>/<out_stem>.jsonl
    state           TEXT    NOT NULL CHECK (state IN
                        ('claiming', 'claimed', 'queued', 'batched', 'delivered', 'rejected')),
    spool_name      TEXT    NOT NULL UNIQUE,       -- the claimed file in <state_dir>/spool/
    inode           INTEGER NOT NULL,              -- of the inbox file when claimed
    size_bytes      INTEGER NOT NULL,
    input_sha256    TEXT,
    id_count        INTEGER,
    bad_line_count  INTEGER NOT NULL DEFAULT 0,
    report_json     TEXT,                          -- validation report (dropped lines etc.)
    error_json      TEXT,                          -- why it was rejected
    claimed_at      TEXT    NOT NULL,
    queued_at       TEXT,
    finished_at     TEXT,
    UNIQUE (job_type, out_stem)
);
CREATE INDEX inputs_by_state ON inputs (state, job_type, id);

-- One row per batch: one remote job's worth of work (one or more inputs, or part of one).
CREATE TABLE batches (
    id                   INTEGER PRIMARY KEY,
    key                  TEXT    NOT NULL UNIQUE,   -- remote job name = key || '-' || attempt
    job_type             TEXT    NOT NULL CHECK (job_type IN ('tweets', 'users')),
    state                TEXT    NOT NULL CHECK (state IN ('queued', 'creating', 'uploading',
                             'waiting', 'downloading', 'delivering', 'done', 'failed',
                             'cancelled')),
    attempt              INTEGER NOT NULL DEFAULT 0,
    stage_retries        INTEGER NOT NULL DEFAULT 0,
    stage_waits          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      TEXT,
    id_count             INTEGER NOT NULL DEFAULT 0,
    upload_bytes         INTEGER NOT NULL DEFAULT 0,
    upload_name          TEXT    NOT NULL,          -- upload body in <state_dir>/spool/
    x_job_id             TEXT,
    x_job_name           TEXT,
    x_status             TEXT,
    x_error              TEXT,
    x_created_at         TEXT,
    upload_url           TEXT,
    upload_expires_at    TEXT,
    download_url         TEXT,
    download_expires_at  TEXT,
    resumable            INTEGER NOT NULL DEFAULT 0,
    upload_session_url   TEXT,
    poll_count           INTEGER NOT NULL DEFAULT 0,
    uploaded_at          TEXT,
    completed_at         TEXT,
    last_error           TEXT,
    last_http_status     INTEGER,
    created_at           TEXT    NOT NULL,
    updated_at           TEXT    NOT NULL,
    finished_at          TEXT
);
CREATE INDEX batches_by_state ON batches (state, job_type, id);

-- Which inputs (or which slice of an input) a batch carries.
CREATE TABLE batch_inputs (
    batch_id   INTEGER NOT NULL REFERENCES batches (id),
    input_id   INTEGER NOT NULL REFERENCES inputs (id),
    part       INTEGER NOT NULL DEFAULT 0,   -- slice number when an input is split
    first_id   INTEGER NOT NULL DEFAULT 0,   -- offset of the slice's first ID in the input
    id_count   INTEGER NOT NULL,
    PRIMARY KEY (batch_id, input_id, part)
);
CREATE INDEX batch_inputs_by_input ON batch_inputs (input_id);

-- Every remote job created or adopted, for the manifest and to prove no duplicates.
CREATE TABLE remote_jobs (
    x_job_id      TEXT    PRIMARY KEY,
    batch_id      INTEGER NOT NULL REFERENCES batches (id),
    attempt       INTEGER NOT NULL,
    name          TEXT,
    job_type      TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    final_status  TEXT,
    error         TEXT
);
CREATE INDEX remote_jobs_by_batch ON remote_jobs (batch_id);

-- Append-only history.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    at           TEXT    NOT NULL,
    batch_id     INTEGER,
    input_id     INTEGER,
    kind         TEXT    NOT NULL,
    from_state   TEXT,
    to_state     TEXT,
    detail_json  TEXT
);
CREATE INDEX events_by_batch ON events (batch_id, id);
CREATE INDEX events_by_input ON events (input_id, id);
