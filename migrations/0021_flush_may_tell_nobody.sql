-- A flush may tell nobody (issue 15: a lone job's latency). `nekton_flush` (0016, 0018, 0020)
-- NOTIFYs the jobs that got output and the jobs that changed state. `nekton serve` on its embedded
-- database has every follower and every worker of that database in its own process, and tells
-- them in memory; its NOTIFYs only cost: at commit PostgreSQL signals every backend that LISTENs
-- in the database, whatever the channel, and on two cores those wake-ups run where the writer's
-- answer and the waiting request's read would (load-tests/README.md, "Where a lone job's time
-- goes"). A NULL channel now means "no NOTIFY on this channel"; `pg_notify` itself refuses a NULL
-- or empty channel. Everything else is 0020's function, unchanged (the data-modifying CTEs run
-- whether or not the NOTIFY subqueries read them).
CREATE OR REPLACE FUNCTION nekton_flush(
    p_worker uuid,
    p_ids uuid[], p_attempts integer[], p_states text[], p_retry_ms bigint[], p_reasons text[],
    p_exit_codes integer[], p_signals integer[], p_details text[], p_usages text[],
    p_state_channel text, p_tests text[],
    p_chunk_ids uuid[], p_chunk_attempts integer[], p_chunk_seqs integer[],
    p_chunk_streams smallint[], p_chunk_data bytea[],
    p_logs_channel text)
RETURNS TABLE (ids uuid[], chunks bigint)
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
END
$$;
