-- Inputs remember the sha256 of their normalised upload body: equal bodies give equal
-- results, which is what `inbox.duplicate_content = "link"` looks up (with an index).
ALTER TABLE inputs ADD COLUMN body_sha256 TEXT;
UPDATE inputs SET body_sha256 = json_extract(report_json, '$.body_sha256')
 WHERE report_json IS NOT NULL AND json_valid(report_json);
CREATE INDEX inputs_by_body ON inputs (job_type, body_sha256) WHERE body_sha256 IS NOT NULL;
