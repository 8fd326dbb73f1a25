-- A flush accounts for the jobs it finishes itself (issue 15: fewer, cheaper statements per job).
--
-- Two statement triggers did the accounting of every statement that finishes jobs: `jobs_finished`
-- (0025: batch counts, finish positions, `batch.completed` and `job.completed` outbox rows), on
-- every UPDATE of `jobs`, and `job_attempts_usage` (0014: the usage roll-up), on every INSERT into
-- `job_attempts`. Each firing starts a plpgsql function over transition tables. The writer's flush
-- paid both on every call, ≈ 0.4 ms of PostgreSQL's CPU of its ≈ 0.9 ms fixed cost, and the claim
-- paid `jobs_finished` on every call for nothing: it finishes no job (load-tests/README.md, "The
-- flush's cost per call and per job").
--
-- Now the flush does the same accounting in its own statements: the usage roll-up is one more
-- data-modifying CTE of its statement (the attempts it inserted, joined to the jobs it updated),
-- and the batch accounting and the `job.completed` rows follow that statement in the same
-- transaction, only when a finished job has a batch or some endpoint subscribes to that event
-- (both known from the statement itself). The two triggers stay for every other statement that
-- finishes jobs or records attempts (a cancel, a rescue, a requeue, and those of a process of the
-- previous version), with a WHEN condition: they do nothing in a function that accounts for
-- itself, marked by `SET nekton.accounted_inline = 'on'` (the flush, and the claim, which
-- finishes nothing). The setting lasts only while such a function runs; nothing else sets it.
--
-- Same rows, same figures, same locks in the same order: the batch rows are still locked in id
-- order after the jobs' rows; usage counts every inserted attempt once with its job's new state;
-- the shared parts are functions both paths call (`nekton_batches_finished`,
-- `nekton_jobs_completed_events`, `nekton_attempt_usage`). The flush is 0022's otherwise (a
-- migration restates the whole body of the function it replaces; `v_running` is a variable for
-- the reason 0020 gives); its 19- and 18-argument forms call it, unchanged.
--
-- Measured: load-tests/README.md, "The flush accounts for itself (migration 0027)".

-- One attempt's usage bill (its `usage` JSON, NULL for none) in `usage_hourly`'s units. Inlined
-- into the statements that roll usage up.
CREATE FUNCTION nekton_attempt_usage(u jsonb)
RETURNS TABLE (cpu_ms bigint, memory_byte_ms numeric, wall_ms bigint, output_bytes bigint,
               net_rx_bytes bigint, net_tx_bytes bigint)
LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce((u->>'cpu_user_ms')::bigint, 0) + coalesce((u->>'cpu_system_ms')::bigint, 0),
        coalesce((u->>'memory_peak_bytes')::bigint, (u->>'wasm_memory_peak_bytes')::bigint, 0)::numeric
            * coalesce((u->>'wall_ms')::bigint, 0),
        coalesce((u->>'wall_ms')::bigint, 0),
        coalesce((u->>'stdout_bytes')::bigint, 0) + coalesce((u->>'stderr_bytes')::bigint, 0),
        coalesce((u->>'net_rx_bytes')::bigint, 0), coalesce((u->>'net_tx_bytes')::bigint, 0)
$$;

-- The batch accounting of finished jobs `p_ids` (in id order) of batches `p_batches` (NULL for a
-- job without one): 0025's, taken out of the trigger.
CREATE FUNCTION nekton_batches_finished(p_ids uuid[], p_batches uuid[]) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    b_ids uuid[];
    b_counts integer[];
BEGIN
    SELECT array_agg(u.batch_id ORDER BY u.batch_id), array_agg(u.k ORDER BY u.batch_id)
    INTO b_ids, b_counts
    FROM (SELECT f.batch_id, count(*)::int AS k FROM unnest(p_batches) AS f(batch_id)
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
                  FROM unnest(p_ids, p_batches) AS t(id, batch_id)
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
END
$$;

-- The `job.completed` outbox rows of finished jobs `p_ids`, read from their rows as they are now
-- (after the statement that finished them). The caller has checked that some endpoint subscribes.
CREATE FUNCTION nekton_jobs_completed_events(p_ids uuid[]) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
BEGIN
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
    FROM jobs n
    JOIN webhooks w ON w.tenant_id = n.tenant_id AND w.deleted_at IS NULL
        AND 'job.completed' = ANY (w.events)
    LEFT JOIN job_specs s ON s.job_id = n.id
    LEFT JOIN job_attempts a ON a.job_id = n.id AND a.attempt = n.attempt
    WHERE n.id = ANY (p_ids);
END
$$;

-- The trigger for every other statement: the finished jobs from the transition tables, then the
-- two functions above.
CREATE OR REPLACE FUNCTION nekton_jobs_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    f_ids uuid[];
    f_batches uuid[];
BEGIN
    SELECT array_agg(n.id ORDER BY n.id), array_agg(n.batch_id ORDER BY n.id)
    INTO f_ids, f_batches
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.state IN ('succeeded', 'failed', 'cancelled', 'error')
      AND o.state NOT IN ('succeeded', 'failed', 'cancelled', 'error');
    IF f_ids IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM nekton_batches_finished(f_ids, f_batches);
    IF EXISTS (SELECT 1 FROM webhooks w WHERE w.deleted_at IS NULL
               AND 'job.completed' = ANY (w.events)) THEN
        PERFORM nekton_jobs_completed_events(f_ids);
    END IF;
    RETURN NULL;
END
$$;

-- 0014's roll-up, with the bill's units from `nekton_attempt_usage`.
CREATE OR REPLACE FUNCTION nekton_usage_rollup() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
BEGIN
    INSERT INTO usage_hourly AS h (tenant_id, hour, outcome, attempts, jobs_succeeded, jobs_failed,
        jobs_cancelled, jobs_error, cpu_ms, memory_byte_ms, wall_ms, output_bytes, net_rx_bytes, net_tx_bytes)
    SELECT j.tenant_id, date_trunc('hour', a.finished_at), a.reason, count(*),
        count(*) FILTER (WHERE j.state = 'succeeded'), count(*) FILTER (WHERE j.state = 'failed'),
        count(*) FILTER (WHERE j.state = 'cancelled'), count(*) FILTER (WHERE j.state = 'error'),
        sum(m.cpu_ms), sum(m.memory_byte_ms), sum(m.wall_ms), sum(m.output_bytes),
        sum(m.net_rx_bytes), sum(m.net_tx_bytes)
    FROM new_attempts a
    CROSS JOIN LATERAL (SELECT jj.tenant_id, jj.state FROM jobs jj WHERE jj.id = a.job_id) j
    CROSS JOIN LATERAL nekton_attempt_usage(a.usage) m
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, hour, outcome) DO UPDATE SET
        attempts = h.attempts + EXCLUDED.attempts,
        jobs_succeeded = h.jobs_succeeded + EXCLUDED.jobs_succeeded,
        jobs_failed = h.jobs_failed + EXCLUDED.jobs_failed,
        jobs_cancelled = h.jobs_cancelled + EXCLUDED.jobs_cancelled,
        jobs_error = h.jobs_error + EXCLUDED.jobs_error,
        cpu_ms = h.cpu_ms + EXCLUDED.cpu_ms,
        memory_byte_ms = h.memory_byte_ms + EXCLUDED.memory_byte_ms,
        wall_ms = h.wall_ms + EXCLUDED.wall_ms,
        output_bytes = h.output_bytes + EXCLUDED.output_bytes,
        net_rx_bytes = h.net_rx_bytes + EXCLUDED.net_rx_bytes,
        net_tx_bytes = h.net_tx_bytes + EXCLUDED.net_tx_bytes;
    RETURN NULL;
END
$$;

DROP TRIGGER jobs_finished ON jobs;
CREATE TRIGGER jobs_finished AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    WHEN (current_setting('nekton.accounted_inline', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION nekton_jobs_finished();
DROP TRIGGER job_attempts_usage ON job_attempts;
CREATE TRIGGER job_attempts_usage AFTER INSERT ON job_attempts
    REFERENCING NEW TABLE AS new_attempts
    FOR EACH STATEMENT
    WHEN (current_setting('nekton.accounted_inline', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION nekton_usage_rollup();

-- The flush: its usage roll-up in its statement, its batch accounting right after it.
CREATE OR REPLACE FUNCTION nekton_flush(
    p_worker uuid,
    p_ids uuid[], p_attempts integer[], p_states text[], p_retry_ms bigint[], p_reasons text[],
    p_exit_codes integer[], p_signals integer[], p_details text[], p_usages text[],
    p_state_channel text, p_tests text[],
    p_chunk_ids uuid[], p_chunk_attempts integer[], p_chunk_seqs integer[],
    p_chunk_streams smallint[], p_chunk_data bytea[],
    p_logs_channel text,
    p_answer uuid[], p_records uuid[])
RETURNS TABLE (ids uuid[], chunks bigint,
    id uuid, state job_state, attempt integer, max_attempts integer, queue text, priority smallint,
    batch_id uuid, cancel_requested boolean, created_at timestamptz, started_at timestamptz,
    finished_at timestamptz, run_at timestamptz, program text, labels jsonb, reason text,
    exit_code integer, signal integer, detail text, usage jsonb, tests jsonb, suite boolean,
    traceparent text, seqs integer[], streams smallint[], datas bytea[])
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET jit = off
SET enable_seqscan = off
SET enable_bitmapscan = off
SET nekton.accounted_inline = 'on'
AS $$
#variable_conflict use_column
DECLARE
    v_logs_notified bigint;
    v_state_notified bigint;
    v_ids uuid[];
    v_chunks bigint;
    v_fin_ids uuid[];
    v_fin_batches uuid[];
    v_fin_batched boolean;
    v_hooks boolean;
    -- A variable, not a literal: see the header.
    v_running job_state := 'running';
BEGIN
    WITH input AS (
        SELECT * FROM UNNEST(p_ids, p_attempts, p_states, p_retry_ms, p_reasons, p_exit_codes,
                             p_signals, p_details, p_usages, p_tests)
        AS t(job_id, attempt, state, retry_ms, reason, exit_code, signal, detail, usage, tests)
    ), done AS (
        UPDATE jobs j SET state = i.state::job_state, worker_id = NULL, lease_expires_at = NULL,
            finished_at = CASE WHEN i.state = 'scheduled' THEN NULL ELSE now() END,
            run_at = CASE WHEN i.retry_ms IS NULL THEN j.run_at
                ELSE now() + i.retry_ms * interval '1 millisecond' END
        FROM input i
        WHERE j.id = i.job_id AND j.attempt = i.attempt AND j.worker_id = p_worker
          AND j.state = v_running
        RETURNING j.id, j.state, j.started_at, j.tenant_id, j.batch_id
    ), att AS (
        INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, reason, exit_code,
                                  signal, detail, usage, tests)
        SELECT i.job_id, i.attempt, p_worker, d.started_at, i.reason, i.exit_code, i.signal,
               i.detail, i.usage::jsonb, i.tests::jsonb
        FROM input i JOIN done d ON d.id = i.job_id
        ON CONFLICT (job_id, attempt) DO NOTHING
        RETURNING job_id, finished_at, reason, usage
    ), bill AS (
        -- The usage roll-up of the attempts recorded here (what the trigger `job_attempts_usage`
        -- does for other statements): per (tenant, hour, outcome), in key order.
        INSERT INTO usage_hourly AS h (tenant_id, hour, outcome, attempts, jobs_succeeded,
            jobs_failed, jobs_cancelled, jobs_error, cpu_ms, memory_byte_ms, wall_ms, output_bytes,
            net_rx_bytes, net_tx_bytes)
        SELECT d.tenant_id, date_trunc('hour', a.finished_at), a.reason, count(*),
            count(*) FILTER (WHERE d.state = 'succeeded'), count(*) FILTER (WHERE d.state = 'failed'),
            count(*) FILTER (WHERE d.state = 'cancelled'), count(*) FILTER (WHERE d.state = 'error'),
            sum(m.cpu_ms), sum(m.memory_byte_ms), sum(m.wall_ms), sum(m.output_bytes),
            sum(m.net_rx_bytes), sum(m.net_tx_bytes)
        FROM att a JOIN done d ON d.id = a.job_id
        CROSS JOIN LATERAL nekton_attempt_usage(a.usage) m
        GROUP BY 1, 2, 3
        ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, hour, outcome) DO UPDATE SET
            attempts = h.attempts + EXCLUDED.attempts,
            jobs_succeeded = h.jobs_succeeded + EXCLUDED.jobs_succeeded,
            jobs_failed = h.jobs_failed + EXCLUDED.jobs_failed,
            jobs_cancelled = h.jobs_cancelled + EXCLUDED.jobs_cancelled,
            jobs_error = h.jobs_error + EXCLUDED.jobs_error,
            cpu_ms = h.cpu_ms + EXCLUDED.cpu_ms,
            memory_byte_ms = h.memory_byte_ms + EXCLUDED.memory_byte_ms,
            wall_ms = h.wall_ms + EXCLUDED.wall_ms,
            output_bytes = h.output_bytes + EXCLUDED.output_bytes,
            net_rx_bytes = h.net_rx_bytes + EXCLUDED.net_rx_bytes,
            net_tx_bytes = h.net_tx_bytes + EXCLUDED.net_tx_bytes
    ), chunk_input AS (
        SELECT * FROM UNNEST(p_chunk_ids, p_chunk_attempts, p_chunk_seqs, p_chunk_streams,
                             p_chunk_data)
        AS t(job_id, attempt, seq, stream, data)
    ), ins AS (
        INSERT INTO log_chunks (job_id, attempt, seq, stream, data)
        SELECT i.job_id, i.attempt, i.seq, i.stream, i.data FROM chunk_input i
        JOIN jobs j ON j.id = i.job_id AND j.attempt = i.attempt AND j.worker_id = p_worker
                   AND j.state = v_running
        ON CONFLICT DO NOTHING
        RETURNING job_id
    )
    -- The NOTIFYs are counted, not returned (`pg_notify` returns void): evaluated in this
    -- order (all the logs ones, then the state ones), each only when there is something to say
    -- and a channel to say it on (NULL: the caller tells its followers itself),
    -- in parts of at most 150 job ids (37 bytes each) or 150 `state,id` pairs (at most 47), under
    -- PostgreSQL's 8000-byte payload limit.
    SELECT (SELECT count(*) FROM (
                SELECT pg_notify(p_logs_channel, string_agg(p.job_id::text, ','))
                FROM (SELECT u.job_id, (row_number() OVER (ORDER BY u.job_id) - 1) / 150 AS part
                      FROM (SELECT DISTINCT t.job_id FROM ins t
                            WHERE p_logs_channel IS NOT NULL) u) p
                GROUP BY p.part) l),
           (SELECT count(*) FROM (
                SELECT pg_notify(p_state_channel, string_agg(p.state::text || ',' || p.id::text, ','))
                FROM (SELECT d.state, d.id, (row_number() OVER (ORDER BY d.id) - 1) / 150 AS part
                      FROM done d WHERE p_state_channel IS NOT NULL) p
                GROUP BY p.part) s),
           (SELECT coalesce(array_agg(d.id), '{}') FROM done d),
           (SELECT count(*) FROM ins),
           -- The jobs finished here (a retry is `scheduled`, not finished), in id order, with
           -- their batches; and whether any endpoint subscribes to `job.completed`.
           fin.ids, fin.batches, fin.batched,
           EXISTS (SELECT 1 FROM webhooks w WHERE w.deleted_at IS NULL
                   AND 'job.completed' = ANY (w.events))
    FROM (SELECT array_agg(d.id ORDER BY d.id) AS ids,
                 array_agg(d.batch_id ORDER BY d.id) AS batches,
                 bool_or(d.batch_id IS NOT NULL) AS batched
          FROM done d WHERE d.state IN ('succeeded', 'failed', 'cancelled', 'error')) fin
    INTO v_logs_notified, v_state_notified, v_ids, v_chunks, v_fin_ids, v_fin_batches,
         v_fin_batched, v_hooks;
    -- The batch accounting of the finished jobs, after the statement that finished them (what
    -- the trigger `jobs_finished` does for other statements).
    IF v_fin_batched THEN
        PERFORM nekton_batches_finished(v_fin_ids, v_fin_batches);
    END IF;
    IF v_hooks AND v_fin_ids IS NOT NULL THEN
        PERFORM nekton_jobs_completed_events(v_fin_ids);
    END IF;
    ids := v_ids;
    chunks := v_chunks;
    RETURN NEXT;
    IF cardinality(p_answer) > 0 OR cardinality(p_records) > 0 THEN
        RETURN QUERY
        SELECT NULL::uuid[], NULL::bigint, j.id, j.state, j.attempt, j.max_attempts, j.queue,
               j.priority, j.batch_id, j.cancel_requested, j.created_at, j.started_at,
               j.finished_at, j.run_at, s.program, s.labels, a.reason, a.exit_code, a.signal,
               a.detail, a.usage, a.tests, s.suite, s.traceparent, o.seqs, o.streams, o.datas
        FROM jobs j
        JOIN job_specs s ON s.job_id = j.id
        LEFT JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempt
        LEFT JOIN LATERAL (
            SELECT array_agg(c.seq ORDER BY c.seq) AS seqs,
                   array_agg(c.stream ORDER BY c.seq) AS streams,
                   array_agg(c.data ORDER BY c.seq) AS datas
            FROM (SELECT l.seq, l.stream, l.data FROM log_chunks l
                  WHERE j.id = ANY (p_answer)
                    AND l.job_id = j.id AND l.attempt = j.attempt AND l.stream < 3
                  ORDER BY l.seq LIMIT 256) c
        ) o ON true
        WHERE (j.id = ANY (p_answer) OR j.id = ANY (p_records)) AND j.id = ANY (v_ids);
    END IF;
END
$$;

-- The claim finishes no job: `jobs_finished` has nothing to do in it.
ALTER FUNCTION nekton_claim(text, integer, uuid, bigint, integer) SET nekton.accounted_inline = 'on';
