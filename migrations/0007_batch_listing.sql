-- Batches as first-class objects: a tenant's batch listing (newest first, keyset on the UUIDv7
-- id), the module listing, and a resumable order of a batch's completions.

CREATE INDEX batches_tenant_listing ON batches (tenant_id, id DESC);
CREATE INDEX modules_tenant_listing ON modules (tenant_id, created_at DESC, digest DESC);

-- The order in which a batch's jobs reached a final state: `seq` is 1..total, given under the
-- batch row's lock that nekton_jobs_finished takes (0004), so seq order is commit order and a
-- batch event stream resumes exactly after the last seq a client saw (`Last-Event-ID`).
CREATE TABLE batch_finishes (
    batch_id uuid    NOT NULL,
    seq      integer NOT NULL,
    job_id   uuid    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (batch_id, seq)
);
CREATE INDEX batch_finishes_job ON batch_finishes (job_id);

INSERT INTO batch_finishes (batch_id, seq, job_id)
SELECT batch_id, row_number() OVER (PARTITION BY batch_id ORDER BY finished_at, id)::int, id
FROM jobs
WHERE batch_id IS NOT NULL AND state IN ('succeeded', 'failed', 'cancelled', 'error');

-- Runs after jobs_finished in the same statement (statement triggers fire in name order), while
-- the statement still holds the locks of the batch rows that trigger counted: the batch's
-- `finished` already includes this statement's k jobs, so they are seq finished-k+1..finished.
CREATE FUNCTION nekton_batch_finishes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE batch_id IS NOT NULL
                   AND state IN ('succeeded', 'failed', 'cancelled', 'error')) THEN
        RETURN NULL;
    END IF;
    INSERT INTO batch_finishes (batch_id, seq, job_id)
    SELECT f.batch_id, b.finished - f.k + f.n, f.id
    FROM (SELECT n.batch_id, n.id,
                 row_number() OVER (PARTITION BY n.batch_id ORDER BY n.id)::int AS n,
                 count(*) OVER (PARTITION BY n.batch_id)::int AS k
          FROM new_rows n JOIN old_rows o ON o.id = n.id
          WHERE n.batch_id IS NOT NULL
            AND n.state IN ('succeeded', 'failed', 'cancelled', 'error')
            AND o.state NOT IN ('succeeded', 'failed', 'cancelled', 'error')) f
    JOIN batches b ON b.id = f.batch_id;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_finished_seq AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION nekton_batch_finishes();
