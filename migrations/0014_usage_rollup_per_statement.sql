-- The usage roll-up (0003) runs once per statement instead of once per row (issue 15: PostgreSQL's
-- work per job). A worker records up to 150 completions in one statement; the row trigger then
-- looked up each job and upserted `usage_hourly` once per attempt — nearly always the same row
-- (tenant, hour, outcome), so one statement wrote up to 150 versions of it, each ≈ 200 bytes of
-- WAL (load-tests/README.md, "PostgreSQL work per job"). Here the statement's new attempts are
-- summed per (tenant, hour, outcome) first and each sum is added once, in key order (two
-- statements never wait for each other's rows in a cycle).
--
-- Same figures as before: every inserted attempt counts once, with its job's state as it is when
-- the statement ends (the completion's UPDATE of `jobs` runs in the same statement); attempts of
-- a job that no longer exists are not counted. Still in the transaction that records the attempt,
-- so the bill is never lost or counted twice. No data changes: only the trigger is replaced.

-- The job of each attempt is read by primary key, one probe per attempt (LATERAL), with only index
-- paths allowed: plpgsql keeps one plan per connection for this parameterless statement, and one
-- made while `jobs` was small would otherwise keep a sequential scan of it after it has grown
-- (services/tests/queue.rs::the_writers_statements_stay_on_the_indexes_as_jobs_grows counts them).
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
        sum(coalesce((u.u->>'cpu_user_ms')::bigint, 0) + coalesce((u.u->>'cpu_system_ms')::bigint, 0)),
        sum(coalesce((u.u->>'memory_peak_bytes')::bigint, (u.u->>'wasm_memory_peak_bytes')::bigint, 0)::numeric
            * coalesce((u.u->>'wall_ms')::bigint, 0)),
        sum(coalesce((u.u->>'wall_ms')::bigint, 0)),
        sum(coalesce((u.u->>'stdout_bytes')::bigint, 0) + coalesce((u.u->>'stderr_bytes')::bigint, 0)),
        sum(coalesce((u.u->>'net_rx_bytes')::bigint, 0)), sum(coalesce((u.u->>'net_tx_bytes')::bigint, 0))
    FROM new_attempts a
    CROSS JOIN LATERAL (SELECT jj.tenant_id, jj.state FROM jobs jj WHERE jj.id = a.job_id) j
    CROSS JOIN LATERAL (SELECT coalesce(a.usage, '{}'::jsonb) AS u) u
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

DROP TRIGGER job_attempts_usage ON job_attempts;
CREATE TRIGGER job_attempts_usage AFTER INSERT ON job_attempts
    REFERENCING NEW TABLE AS new_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION nekton_usage_rollup();
