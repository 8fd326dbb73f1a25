-- Autovacuum settings for the queue's hot tables. PostgreSQL's defaults vacuum a table once 20 %
-- of its rows are dead and analyze it once 10 % changed: for `jobs`, where every job is inserted
-- and updated several times, that lets dead index entries pile up in the claim's partial indexes
-- (a claim then visits them: p50 ~200 ms with a 20,000-job backlog in load-tests), and leaves the
-- planner's statistics of a table that grew from empty stale for minutes (plans made from them
-- scan the table). Here every hot table is vacuumed and analyzed after a fixed number of changes,
-- not a fraction of its size, so a large table is not left alone for millions of changes.
-- (docs/queue.md, "Autovacuum")
--
-- Storage parameters only: nothing is rewritten, no lock beyond a brief SHARE UPDATE EXCLUSIVE.

-- Every job: inserted queued, updated when claimed, when it ends (and on retries, cancels).
ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 1
);

-- One row per running job, inserted at the claim and deleted at the completion: small and all
-- churn, so every few thousand changes.
ALTER TABLE leases SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 2000,
    autovacuum_vacuum_cost_delay = 1
);

-- One row per attempt, inserted at the claim and updated at the completion.
ALTER TABLE job_attempts SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000
);

-- Insert-mostly (output), deleted in bulk by retention: vacuum after inserts too, so the
-- visibility map stays current (index-only scans, cheap later vacuums), and after retention.
ALTER TABLE log_chunks SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05
);
