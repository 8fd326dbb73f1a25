-- The flush answers followers too (issue 15: "the SSE follower should not re-read the job").
--
-- `p_records`: completed jobs of this flush whose final record alone the caller wants back — an
-- SSE stream in the writer's process follows them and sends it as its `exit` event. They come as
-- further rows like `p_answer`'s, with NULL output arrays: a follower reads the chunks after its
-- own position anyway, and reading a big job's first 256 chunks back for it would slow the
-- writer for nothing. A job in both lists is answered with its output. Otherwise the function is
-- 0021's, unchanged (a migration restates the whole body of the function it replaces). The
-- 19-argument form stays, for workers of the previous version, as a call of this one that wants
-- no records; the 18-argument form calls the 19-argument one, as before.
CREATE FUNCTION nekton_flush(
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
AS $$
#variable_conflict use_column
DECLARE
    v_logs_notified bigint;
    v_state_notified bigint;
    v_ids uuid[];
    v_chunks bigint;
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
        RETURNING j.id, j.state, j.started_at
    ), att AS (
        INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, reason, exit_code,
                                  signal, detail, usage, tests)
        SELECT i.job_id, i.attempt, p_worker, d.started_at, i.reason, i.exit_code, i.signal,
               i.detail, i.usage::jsonb, i.tests::jsonb
        FROM input i JOIN done d ON d.id = i.job_id
        ON CONFLICT (job_id, attempt) DO NOTHING
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
           (SELECT count(*) FROM ins)
    INTO v_logs_notified, v_state_notified, v_ids, v_chunks;
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

CREATE OR REPLACE FUNCTION nekton_flush(
    p_worker uuid,
    p_ids uuid[], p_attempts integer[], p_states text[], p_retry_ms bigint[], p_reasons text[],
    p_exit_codes integer[], p_signals integer[], p_details text[], p_usages text[],
    p_state_channel text, p_tests text[],
    p_chunk_ids uuid[], p_chunk_attempts integer[], p_chunk_seqs integer[],
    p_chunk_streams smallint[], p_chunk_data bytea[],
    p_logs_channel text,
    p_answer uuid[])
RETURNS TABLE (ids uuid[], chunks bigint,
    id uuid, state job_state, attempt integer, max_attempts integer, queue text, priority smallint,
    batch_id uuid, cancel_requested boolean, created_at timestamptz, started_at timestamptz,
    finished_at timestamptz, run_at timestamptz, program text, labels jsonb, reason text,
    exit_code integer, signal integer, detail text, usage jsonb, tests jsonb, suite boolean,
    traceparent text, seqs integer[], streams smallint[], datas bytea[])
LANGUAGE sql VOLATILE
AS $$
    SELECT f.*
    FROM nekton_flush(p_worker, p_ids, p_attempts, p_states, p_retry_ms, p_reasons, p_exit_codes,
                      p_signals, p_details, p_usages, p_state_channel, p_tests, p_chunk_ids,
                      p_chunk_attempts, p_chunk_seqs, p_chunk_streams, p_chunk_data,
                      p_logs_channel, p_answer, NULL) f
$$;
