-- Placeholder so that 0006 applies on this branch: the real 0005 (0005_cluster.sql) lands from
-- another branch. DELETE THIS FILE when merging that branch (migrate.py refuses a gap).
SELECT 1;
