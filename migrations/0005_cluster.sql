-- Several hosts on one store (issue 12): the leader lease, the hosts' heartbeats, and which
-- host wrote each event row. Timestamps as elsewhere: ISO-8601 UTC text (the store's clock).
--
-- `lease`: exactly one row, seeded here. `holder` drives X; `epoch` goes up by one at every
-- acquisition, and every fenced write checks holder + epoch + expires_at in its own transaction.
CREATE TABLE lease (
    name         TEXT    PRIMARY KEY CHECK (name = 'leader'),
    holder       TEXT,
    epoch        INTEGER NOT NULL DEFAULT 0,
    acquired_at  TEXT,
    renewed_at   TEXT,
    expires_at   TEXT
);
INSERT INTO lease (name, holder, epoch) VALUES ('leader', NULL, 0);
-- One row per host that ever ran on this store: its role ('leader' | 'standby' | 'stopped'),
-- process, program version, when that process started and when it was last seen.
CREATE TABLE hosts (
    host_id     TEXT    PRIMARY KEY,
    role        TEXT    NOT NULL,
    pid         INTEGER,
    version     TEXT,
    started_at  TEXT,
    last_seen   TEXT
);
-- The host that wrote the row (NULL in rows written before).
ALTER TABLE events ADD COLUMN host_id TEXT;
