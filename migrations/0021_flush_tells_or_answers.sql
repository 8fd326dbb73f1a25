-- The flush may tell nobody, and may answer (issue 15: a lone job's latency).
--
-- A NULL channel means "no NOTIFY on this channel" (`pg_notify` itself refuses a NULL or empty
-- channel). `nekton serve` on its embedded database has every follower and every worker of that
-- database in its own process and tells them in memory; a NOTIFY there only costs: at commit
-- PostgreSQL signals every backend that LISTENs in the database, whatever the channel.
--
-- `p_answer`: jobs of this flush whose final record and first page of output (256 chunks of
-- stdout and stderr, in order, as `jobs::get_with_output` reads them) the caller wants back — a
-- `POST /v1/jobs?wait=` request in the writer's process waits for them. They come as further rows
-- after the first (which carries `ids` and `chunks` as before), read in the same transaction right
-- after the writes: the answer is the stored record, without another round trip after the
-- commit. Otherwise the function is 0020's, unchanged (the data-modifying CTEs run whether or not
-- the NOTIFY subqueries read them). The 18-argument form stays, for workers of the previous
-- version, as a call of this one that wants no answers.
CREATE FUNCTION nekton_flush(
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
    IF cardinality(p_answer) > 0 THEN
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
                  WHERE l.job_id = j.id AND l.attempt = j.attempt AND l.stream < 3
                  ORDER BY l.seq LIMIT 256) c
        ) o ON true
        WHERE j.id = ANY (p_answer) AND j.id = ANY (v_ids);
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
    p_logs_channel text)
RETURNS TABLE (ids uuid[], chunks bigint)
LANGUAGE sql VOLATILE
AS $$
    SELECT f.ids, f.chunks
    FROM nekton_flush(p_worker, p_ids, p_attempts, p_states, p_retry_ms, p_reasons, p_exit_codes,
                      p_signals, p_details, p_usages, p_state_channel, p_tests, p_chunk_ids,
                      p_chunk_attempts, p_chunk_seqs, p_chunk_streams, p_chunk_data,
                      p_logs_channel, NULL) f
$$;
