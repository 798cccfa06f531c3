-- Operator settings that must survive a restart, one row per key (value: JSON).
-- `pause`: {"by": ..., "reason": ...} while new remote work is held for maintenance; the row's
-- absence means running. Timestamps as elsewhere: ISO-8601 UTC text.
CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value_json  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
