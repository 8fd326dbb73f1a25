-- The worker writer's flush as a function (issue 15: a lone job's latency and PostgreSQL's CPU per
-- job). The flush — a batch of completions and the log chunks before them, one statement — was
-- sent as PostgreSQL's unnamed statement, parsed and planned at every execution (≈ 0.25 ms of
-- parse and ≈ 0.3 ms of planning here, more than its execution for a lone job), because a named
-- statement's cached generic plan, made while `jobs` was small, kept a sequential scan of `jobs`
-- after the table had grown (load-tests/README.md, issue 4).
--
-- As a PL/pgSQL function its statement is parsed once per connection and its generic plan is
-- cached there, and the function's own settings keep that plan on the indexes whatever the
-- table's size when it was made — as `nekton_claim` does (0005): `enable_seqscan` and
-- `enable_bitmapscan` off make a scan of `jobs` by anything but an index cost more than any
-- index path; where no index serves (a small table read by a trigger), the scan is still taken.
--
-- The body is the statement the writer sent (services/src/store/queue.rs, `flush`): the
-- completions `p_ids`..`p_tests` (one element per completion) of worker `p_worker`, applied where
-- the fence holds (the job still running that attempt on that worker), their attempt records,
-- and the chunks `p_chunk_*` inserted under the same fence — all sub-statements of one WITH, so
-- they share one snapshot — then the two NOTIFYs, logs (the ids of the jobs given output) then
-- state (`state,id` pairs of the completions applied), each only when there is something to
-- say. Returns the ids of the completions applied and the number of chunks stored. The writer's
-- other two statements are this one with one side empty: completions alone (`complete`) and
-- chunks alone (`insert_chunks`), so the fenced writes exist once.
CREATE FUNCTION nekton_flush(
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
          AND j.state = 'running'
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
                   AND j.state = 'running'
        ON CONFLICT DO NOTHING
        RETURNING job_id
    )
    -- The NOTIFYs are counted, not returned (`pg_notify` returns void): evaluated in this
    -- order, each only when there is something to say.
    SELECT (SELECT count(*) FROM (SELECT pg_notify(p_logs_channel, string_agg(DISTINCT t.job_id::text, ','))
                                  FROM ins t HAVING count(*) > 0) l),
           (SELECT count(*) FROM (SELECT pg_notify(p_state_channel, string_agg(d.state::text || ',' || d.id::text, ','))
                                  FROM done d HAVING count(*) > 0) s),
           (SELECT coalesce(array_agg(d.id), '{}') FROM done d),
           (SELECT count(*) FROM ins)
    INTO v_logs_notified, v_state_notified, v_ids, v_chunks;
    ids := v_ids;
    chunks := v_chunks;
    RETURN NEXT;
END
$$;
