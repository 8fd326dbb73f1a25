-- The claim statement of store/queue.rs for 32 jobs, 500 times; see run.sh.
-- (Written for the schema before migration 0015, which moved the lease from `leases` into
-- `jobs.lease_expires_at`: run it at an older commit to reproduce its figures.)
\set ON_ERROR_STOP 1
TRUNCATE jobs, job_specs, job_attempts, leases, webhook_attempts, webhook_deliveries CASCADE;
INSERT INTO jobs (id, tenant_id, queue, max_attempts) SELECT nekton_uuid_v7(), 'default', 'q', 1 FROM generate_series(1, 32000);
INSERT INTO job_specs (job_id, spec, spec_hash, program) SELECT id, '{}', '\x00', 'p' FROM jobs;
\if :{?notrig}
ALTER TABLE jobs DISABLE TRIGGER jobs_finished;
\else
ALTER TABLE jobs ENABLE TRIGGER jobs_finished;
\endif
VACUUM ANALYZE jobs;
DO $$
DECLARE g int; n int; t timestamptz; ms float8[] := '{}';
BEGIN
  FOR g IN 1..500 LOOP
    t := clock_timestamp();
    WITH picked AS (SELECT id FROM jobs WHERE state IN ('queued','scheduled') AND queue = 'q' AND run_at <= now() ORDER BY priority DESC, run_at, id LIMIT 32 FOR UPDATE SKIP LOCKED),
    claimed AS (UPDATE jobs j SET state = 'running', attempt = j.attempt + 1, worker_id = '00000000-0000-0000-0000-0000000000ff', started_at = now() FROM picked WHERE j.id = picked.id RETURNING j.id, j.attempt),
    lease AS (INSERT INTO leases (job_id, attempt, worker_id, expires_at) SELECT id, attempt, '00000000-0000-0000-0000-0000000000ff', now() + interval '30 s' FROM claimed)
    SELECT count(*) INTO n FROM claimed JOIN job_specs s ON s.job_id = claimed.id;
    ms := ms || extract(epoch FROM clock_timestamp() - t) * 1000;
  END LOOP;
  INSERT INTO bench_res SELECT current_setting('bench.variant'), 0, unnest(ms);
END $$;
