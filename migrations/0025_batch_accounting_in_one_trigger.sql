-- A statement's finished jobs accounted in one trigger (issue 15: fewer, cheaper statements per job).
--
-- Until now two statement triggers on `jobs` did the batch accounting of every statement that moved
-- jobs into a final state (the writer's flush, a cancel, a rescue): `jobs_finished` (0004: the
-- batches' `finished` counts under their rows' locks, `batch.completed` and `job.completed` outbox
-- rows) and then `jobs_finished_seq` (0007: each job's position in its batch's finish order). Each
-- joined the transition tables on its own and ran its own statements: seven per flush. Now one
-- function does both, in four: the finished jobs read from the transition tables once; the batch rows
-- locked in id order as before; one statement that updates the counts, writes the positions from the
-- counts it returns (the k jobs of a batch are finished-k+1..finished, in id order, as before) and
-- the `batch.completed` rows; and the `job.completed` rows only when some endpoint subscribes to
-- that event (a probe of `webhooks` first; the join over the finished jobs ran on every flush). Same rows, same
-- locks in the same order, same positions; `jobs_finished_seq` and its function are dropped.
--
-- Measured (release, `load-tests throughput --throughput-jobs 20000`, a fresh private PostgreSQL
-- with `pg_stat_statements` per run, three interleaved pairs; load-tests/README.md, "What a job's rows cost
-- PostgreSQL"): the flush 4.70–4.81 → 3.88–4.31 ms per call, PostgreSQL CPU per job
-- lower in every pair (−6 % to −14 %).
CREATE OR REPLACE FUNCTION nekton_jobs_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    f_ids uuid[];
    f_batches uuid[];
    b_ids uuid[];
    b_counts integer[];
BEGIN
    -- The jobs this statement moved into a final state, read from the transition tables once.
    SELECT array_agg(n.id ORDER BY n.id), array_agg(n.batch_id ORDER BY n.id)
    INTO f_ids, f_batches
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.state IN ('succeeded', 'failed', 'cancelled', 'error')
      AND o.state NOT IN ('succeeded', 'failed', 'cancelled', 'error');
    IF f_ids IS NULL THEN
        RETURN NULL;
    END IF;

    SELECT array_agg(u.batch_id ORDER BY u.batch_id), array_agg(u.k ORDER BY u.batch_id)
    INTO b_ids, b_counts
    FROM (SELECT f.batch_id, count(*)::int AS k FROM unnest(f_batches) AS f(batch_id)
          WHERE f.batch_id IS NOT NULL GROUP BY f.batch_id) u;
    IF b_ids IS NOT NULL THEN
        -- Locks in id order: two statements finishing jobs of the same batches never wait on
        -- each other in a cycle.
        PERFORM 1 FROM batches WHERE id = ANY (b_ids) ORDER BY id FOR UPDATE;
        WITH counted AS (
            UPDATE batches b SET finished = b.finished + u.k
            FROM unnest(b_ids, b_counts) AS u(id, k)
            WHERE b.id = u.id
            RETURNING b.id, b.tenant_id, b.total, b.finished, b.labels, b.created_at, u.k
        ), seqs AS (
            -- This statement's k jobs of a batch are its positions finished-k+1..finished, in id order.
            INSERT INTO batch_finishes (batch_id, seq, job_id)
            SELECT f.batch_id, c.finished - c.k + f.n, f.id
            FROM (SELECT t.id, t.batch_id,
                         row_number() OVER (PARTITION BY t.batch_id ORDER BY t.id)::int AS n
                  FROM unnest(f_ids, f_batches) AS t(id, batch_id)
                  WHERE t.batch_id IS NOT NULL) f
            JOIN counted c ON c.id = f.batch_id
        ), done AS (
            SELECT * FROM counted WHERE finished >= total AND finished - k < total
        )
        INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event, payload)
        SELECT nekton_uuid_v7(), w.id, d.tenant_id, 'batch.completed',
            jsonb_build_object('type', 'batch.completed',
                'timestamp', nekton_rfc3339(clock_timestamp()),
                'data', jsonb_build_object('id', d.id, 'total', d.total, 'labels', d.labels,
                    'created_at', nekton_rfc3339(d.created_at), 'counts', c.counts))
        FROM done d
        JOIN webhooks w ON w.tenant_id = d.tenant_id AND w.deleted_at IS NULL
            AND 'batch.completed' = ANY (w.events)
        CROSS JOIN LATERAL (
            SELECT jsonb_build_object(
                'succeeded', count(*) FILTER (WHERE j.state = 'succeeded'),
                'failed', count(*) FILTER (WHERE j.state = 'failed'),
                'cancelled', count(*) FILTER (WHERE j.state = 'cancelled'),
                'error', count(*) FILTER (WHERE j.state = 'error')) AS counts
            FROM jobs j WHERE j.batch_id = d.id) c;
    END IF;

    IF EXISTS (SELECT 1 FROM webhooks w WHERE w.deleted_at IS NULL
               AND 'job.completed' = ANY (w.events)) THEN
        INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event, payload)
        SELECT nekton_uuid_v7(), w.id, n.tenant_id, 'job.completed',
            jsonb_build_object('type', 'job.completed',
                'timestamp', nekton_rfc3339(coalesce(n.finished_at, clock_timestamp())),
                'data', jsonb_build_object('id', n.id, 'state', n.state, 'attempt', n.attempt,
                    'queue', n.queue, 'batch_id', n.batch_id, 'program', s.program,
                    'labels', coalesce(s.labels, '{}'::jsonb),
                    'outcome', CASE WHEN a.reason IS NULL THEN NULL ELSE jsonb_build_object(
                        'reason', a.reason, 'exit_code', a.exit_code, 'signal', a.signal,
                        'detail', a.detail) END,
                    'usage', a.usage,
                    'created_at', nekton_rfc3339(n.created_at),
                    'started_at', nekton_rfc3339(n.started_at),
                    'finished_at', nekton_rfc3339(n.finished_at)))
        FROM new_rows n
        JOIN webhooks w ON w.tenant_id = n.tenant_id AND w.deleted_at IS NULL
            AND 'job.completed' = ANY (w.events)
        LEFT JOIN job_specs s ON s.job_id = n.id
        LEFT JOIN job_attempts a ON a.job_id = n.id AND a.attempt = n.attempt
        WHERE n.id = ANY (f_ids);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER jobs_finished_seq ON jobs;
DROP FUNCTION nekton_batch_finishes();
