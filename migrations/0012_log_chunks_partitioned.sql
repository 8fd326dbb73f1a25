-- `log_chunks` becomes a table partitioned by RANGE on `job_id`, so retention drops a whole
-- partition of old output instead of deleting its rows one by one (docs/queue.md, "Log
-- partitions").
--
-- Job ids are UUIDv7: their first 48 bits are the submission time in Unix milliseconds, so a range
-- of ids is a range of submission times. A partition covers one period (a day at the default retention) from
-- the UUID with the period start's milliseconds in the first 48 bits and zeros elsewhere to the
-- next period's. The primary key starts with `job_id`, the partition key, so it stays a valid
-- unique index on the partitioned table and the writer's `INSERT ... ON CONFLICT DO NOTHING` keeps
-- storing each chunk exactly once.
--
-- The existing table is not copied: it is renamed and attached, as it is, as the DEFAULT
-- partition. Its rows, its primary-key index (attached to the new one), its column storage
-- (0002: `data` STORAGE EXTERNAL) and its autovacuum settings (0011) stay; attaching a default
-- partition to a table with no other partition checks nothing, so nothing is scanned or
-- rewritten. The default partition also takes any id no range partition covers (ids of a period
-- whose partition does not exist yet, non-v7 ids): no insert can fail for lack of a partition.
-- Range partitions are created ahead of time by the workers (`store::partitions::ensure`), with
-- the same storage and autovacuum settings.

ALTER TABLE log_chunks RENAME TO log_chunks_default;
ALTER TABLE log_chunks_default RENAME CONSTRAINT log_chunks_pkey TO log_chunks_default_pkey;

-- Same columns in the same order as before (0001, with 0008's `stored_at`).
CREATE TABLE log_chunks (
    job_id    uuid        NOT NULL,
    attempt   integer     NOT NULL,
    seq       integer     NOT NULL,
    stream    smallint    NOT NULL,  -- 1 stdout, 2 stderr, 3 test-case events
    data      bytea       NOT NULL,
    stored_at timestamptz DEFAULT now(),
    PRIMARY KEY (job_id, attempt, seq)
) PARTITION BY RANGE (job_id);

-- 0002: out of line, uncompressed. Partitions created with `LIKE log_chunks INCLUDING STORAGE`
-- inherit it.
ALTER TABLE log_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

ALTER TABLE log_chunks ATTACH PARTITION log_chunks_default DEFAULT;
