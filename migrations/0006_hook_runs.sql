-- Hook and webhook runs: one row per configured target and event, written in the same
-- transaction as the input's move to delivered/rejected (or when the token is refused:
-- paused), so a crash never loses one. state: pending -> running -> done | failed; a row left
-- 'running' by a crash is run again (same idempotency_key: at-least-once). Timestamps as
-- elsewhere: ISO-8601 UTC text; next_at: when a pending run is due.
CREATE TABLE hook_runs (
    id               INTEGER PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('hook', 'webhook')),
    target           TEXT NOT NULL,
    event            TEXT NOT NULL CHECK (event IN ('delivered', 'rejected', 'paused')),
    input_id         INTEGER REFERENCES inputs(id),
    batch_id         INTEGER,
    idempotency_key  TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    next_at          TEXT NOT NULL,
    detail_json      TEXT,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    finished_at      TEXT,
    UNIQUE (target, idempotency_key)
);
CREATE INDEX hook_runs_due ON hook_runs (state, next_at);
CREATE INDEX hook_runs_input ON hook_runs (input_id);
