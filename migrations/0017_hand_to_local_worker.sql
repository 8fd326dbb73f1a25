-- A lone job handed to a worker in the submitting process (issue 15: a lone job's latency). In
-- `nekton serve` the API and a worker share one process; when the worker has a free slot, the
-- submission stores the job already `running` on that worker — attempt 1, its lease, `started_at`
-- = `created_at` — and the API passes the job to the worker in memory: no claim statement, no
-- wake-up, one durable transition fewer on the job's path (docs/queue.md, "Handing a lone job to
-- the worker beside the API").
--
-- The submission may do so only when a claim would have taken it at once anyway: no job is
-- waiting, runnable now, in a queue that worker serves, of a tenant a claim could serve now (so
-- nothing a claim would take is passed over, by priority, age or the tenants' fair shares; a
-- tenant at its `max_running` cap, or paused with a cap of 0, is passed over by the claim too),
-- and the job's own tenant has no `max_running` cap (caps are enforced by the claim's per-tenant
-- lock; a capped tenant's jobs always go through it). This function answers that question inside
-- the submission's statement.
--
-- Tenants with waiting jobs are found by the claim's loose index scan (0005), one probe each, so
-- an idle queue costs two index probes and a backlog in a queue this worker does not serve is not
-- read row by row. Same plan settings as `nekton_claim`: a generic plan cached per connection,
-- kept on the indexes whatever the table's size when it was made.
CREATE FUNCTION nekton_may_hand(p_queues text[], p_tenant text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
SET jit = off
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM tenants t WHERE t.id = p_tenant AND t.max_running IS NOT NULL) THEN
        RETURN false;
    END IF;
    RETURN NOT EXISTS (
        WITH RECURSIVE waiting (tenant_id) AS (
            (SELECT j.tenant_id FROM jobs j
             WHERE j.state IN ('queued', 'scheduled')
             ORDER BY j.tenant_id LIMIT 1)
            UNION ALL
            SELECT (SELECT j.tenant_id FROM jobs j
                    WHERE j.state IN ('queued', 'scheduled') AND j.tenant_id > w.tenant_id
                    ORDER BY j.tenant_id LIMIT 1)
            FROM waiting w WHERE w.tenant_id IS NOT NULL
        )
        SELECT 1 FROM waiting w
        CROSS JOIN LATERAL (
            SELECT 1 FROM jobs j
            WHERE j.tenant_id = w.tenant_id AND j.queue = ANY (p_queues)
              AND j.state IN ('queued', 'scheduled') AND j.run_at <= now()
            LIMIT 1) here
        LEFT JOIN LATERAL (
            SELECT t.max_running AS cap FROM tenants t WHERE t.id = w.tenant_id LIMIT 1) t ON true
        WHERE w.tenant_id IS NOT NULL
          AND (t.cap IS NULL
               OR (t.cap > 0
                   AND (SELECT count(*) FROM jobs r
                        WHERE r.tenant_id = w.tenant_id AND r.state = 'running') < t.cap)));
END
$$;
