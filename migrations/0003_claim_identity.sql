-- What identifies the file a claim took, beyond inode and size (inode numbers are reused):
-- its name as raw bytes (a non-UTF-8 name is stored escaped in `name`, which cannot be
-- opened), and its mtime/ctime in ns when it was claimed. NULL in rows claimed before.
ALTER TABLE inputs ADD COLUMN name_bytes BLOB;
ALTER TABLE inputs ADD COLUMN mtime_ns INTEGER;
ALTER TABLE inputs ADD COLUMN ctime_ns INTEGER;
