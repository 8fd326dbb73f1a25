-- The complete statement of store/queue.rs for 150 jobs, 200 times; see run.sh.
-- (Written for the schema before migration 0015, which moved the lease from `leases` into
-- `jobs.lease_expires_at`: run it at an older commit to reproduce its figures.)
\set ON_ERROR_STOP 1
TRUNCATE jobs, job_specs, job_attempts, leases, webhook_attempts, webhook_deliveries CASCADE;
DELETE FROM webhooks; DELETE FROM batches;
INSERT INTO tenants (id) VALUES ('other') ON CONFLICT DO NOTHING;
INSERT INTO webhooks (id, tenant_id, url, events, secret) VALUES (gen_random_uuid(), 'other', 'http://x/', '{job.completed,batch.completed}', 's');
SELECT CASE WHEN :'variant' = 'hooked' THEN 1 END AS hooked \gset
\if :{?hooked}
INSERT INTO webhooks (id, tenant_id, url, events, secret) VALUES (gen_random_uuid(), 'default', 'http://x/', '{job.completed,batch.completed}', 's');
\endif
INSERT INTO batches (id, tenant_id, total, spec_hash) SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'default', 150, '\x00' FROM generate_series(1, 200) g;
INSERT INTO jobs (id, tenant_id, queue, max_attempts, state, attempt, worker_id, started_at, batch_id)
SELECT nekton_uuid_v7(), 'default', 'q', 1, 'running', 1, '00000000-0000-0000-0000-0000000000ff', now(),
  CASE WHEN :'variant' = 'batch' THEN ('00000000-0000-0000-0000-' || lpad((1 + g % 200)::text, 12, '0'))::uuid END
FROM generate_series(1, 30000) g;
INSERT INTO job_specs (job_id, spec, spec_hash, program, labels) SELECT id, '{}', '\x00', 'sha256:0123456789abcdef', '{"a":"b"}' FROM jobs;
INSERT INTO leases (job_id, attempt, worker_id, expires_at) SELECT id, 1, worker_id, now() + interval '1 hour' FROM jobs;
\if :{?notrig}
ALTER TABLE jobs DISABLE TRIGGER jobs_finished;
\else
ALTER TABLE jobs ENABLE TRIGGER jobs_finished;
\endif
VACUUM ANALYZE jobs; VACUUM ANALYZE leases; VACUUM ANALYZE batches;
DROP TABLE IF EXISTS ids; CREATE TABLE ids AS SELECT id, (row_number() OVER (ORDER BY id) - 1) / 150 AS grp FROM jobs;
CREATE INDEX ON ids (grp);
DO $$
DECLARE g int; n int; t timestamptz; ms float8[] := '{}';
BEGIN
  FOR g IN 0..199 LOOP
    t := clock_timestamp();
    WITH input AS (
      SELECT i.id AS job_id, 1 AS attempt, 'succeeded' AS state, NULL::bigint AS retry_ms, 'exited' AS reason, 0 AS exit_code,
             NULL::int AS signal, NULL::text AS detail, '{"wall_ms":1,"stdout_bytes":13}' AS usage FROM ids i WHERE i.grp = g
    ), done AS (
      UPDATE jobs j SET state = i.state::job_state, worker_id = NULL, finished_at = now()
      FROM input i WHERE j.id = i.job_id AND j.attempt = i.attempt AND j.worker_id = '00000000-0000-0000-0000-0000000000ff' AND j.state = 'running'
      RETURNING j.id, j.started_at
    ), att AS (
      INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, reason, exit_code, signal, detail, usage)
      SELECT i.job_id, i.attempt, '00000000-0000-0000-0000-0000000000ff', d.started_at, i.reason, i.exit_code, i.signal, i.detail, i.usage::jsonb
      FROM input i JOIN done d ON d.id = i.job_id ON CONFLICT (job_id, attempt) DO NOTHING
    ), released AS (DELETE FROM leases l USING done d WHERE l.job_id = d.id)
    SELECT count(*) INTO n FROM done;
    ms := ms || extract(epoch FROM clock_timestamp() - t) * 1000;
  END LOOP;
  INSERT INTO bench_res SELECT current_setting('bench.variant'), 0, unnest(ms);
END $$;
SELECT count(*) AS outbox FROM webhook_deliveries;
