-- The fair claim: free slots are shared among the tenants with work in a queue by weight, and a
-- tenant's max_running holds however many workers claim at once. See docs/queue.md ("Fair
-- claims across tenants") for the rule and why it is shaped this way.

-- Claimable jobs per tenant and queue, in each tenant's claim order. One index serves every read
-- the claim makes of waiting jobs: the walk over the tenants with waiting work (one descent per
-- tenant), whether a tenant has work in a queue, and each tenant's ordered pick. It also serves
-- the max_queued count (tenant_id = $1) and the queue figures of /metrics, so it replaces both
-- jobs_claimable (queue, priority DESC, run_at, id), which the claim no longer reads, and
-- jobs_tenant_waiting (tenant_id, queue), a prefix of this one: every index on jobs is paid for
-- at every state change.
CREATE INDEX jobs_tenant_claimable ON jobs (tenant_id, queue, priority DESC, run_at, id)
    WHERE state IN ('queued', 'scheduled');
DROP INDEX jobs_claimable;
DROP INDEX jobs_tenant_waiting;

-- Running jobs per tenant: max_running and the fair share count them at every claim.
CREATE INDEX jobs_tenant_running ON jobs (tenant_id) WHERE state = 'running';

-- Claims up to p_limit jobs of queue p_queue for worker p_worker, each with a lease of
-- p_lease_ms, and returns them with their specs, highest priority first. Called as one statement
-- by services/src/store/queue.rs::claim. It runs three statements on purpose:
--
-- 1. Find the tenants with claimable jobs in the queue (a loose index scan: one descent per
--    tenant, however long any tenant's backlog) with their weight and max_running, and take a
--    transaction-level advisory lock for each capped tenant that still has room, in key order
--    (so two claims never wait on each other in a cycle). Paused tenants (max_running 0) and
--    tenants already at their cap are left out without a lock.
-- 2. With a snapshot taken after those locks (every statement of a VOLATILE function gets a new
--    one), count each tenant's running jobs and share the free slots by weight — the k-th extra
--    job of tenant t is tagged (running_t + k) / weight_t and the p_limit smallest tags win, i.e.
--    least-served first — then lock each tenant's share: an ordered pick (priority DESC, run_at,
--    id) with FOR UPDATE SKIP LOCKED.
-- 3. Move the locked jobs to `running` with attempt + 1, write their leases, return their specs.
--
-- Why not one statement: a statement's snapshot is taken when it starts, so a lock taken inside
-- it cannot make a concurrent claim's commit visible to its own count of running jobs — two
-- workers would both see 1 of 2 running and both take 1 more. The lock must come first, then
-- the count, in a later statement.
--
-- Settings: no JIT (worst-case cost estimates crossed its threshold: milliseconds of compiling
-- per call); one generic plan per connection (no planning per call); and only index paths, so
-- that a plan made while `jobs` was empty cannot be a sequential scan kept once it has grown.
-- Every read below is an index probe that stops at its LIMIT (LATERAL ... LIMIT, never a join
-- over the queue's jobs).
CREATE FUNCTION nekton_claim(p_queue text, p_limit integer, p_worker uuid, p_lease_ms bigint)
RETURNS TABLE (id uuid, attempt integer, max_attempts integer, wait_ms bigint, spec jsonb)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET jit = off
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_tenants text[];
    v_weights integer[];
    v_caps integer[];
    v_keys bigint[];
    v_key bigint;
    v_ids uuid[];
BEGIN
    IF p_limit IS NULL OR p_limit <= 0 THEN
        RETURN;
    END IF;

    -- 1. Tenants with work here, and the locks of the capped ones that have room.
    WITH RECURSIVE waiting (tenant_id) AS (
        (SELECT j.tenant_id FROM jobs j
         WHERE j.state IN ('queued', 'scheduled')
         ORDER BY j.tenant_id LIMIT 1)
        UNION ALL
        SELECT (SELECT j.tenant_id FROM jobs j
                WHERE j.state IN ('queued', 'scheduled') AND j.tenant_id > w.tenant_id
                ORDER BY j.tenant_id LIMIT 1)
        FROM waiting w WHERE w.tenant_id IS NOT NULL
    ), active AS (
        -- A probe per tenant (LATERAL ... LIMIT 1, never a join over the queue's jobs).
        SELECT w.tenant_id FROM waiting w CROSS JOIN LATERAL (
            SELECT 1 FROM jobs j
            WHERE j.tenant_id = w.tenant_id AND j.queue = p_queue AND j.state IN ('queued', 'scheduled')
            LIMIT 1) here
        WHERE w.tenant_id IS NOT NULL
    ), settings AS (
        SELECT a.tenant_id, coalesce(t.weight, 1) AS weight, t.max_running AS cap
        FROM active a LEFT JOIN LATERAL (
            SELECT t.weight, t.max_running FROM tenants t WHERE t.id = a.tenant_id LIMIT 1) t ON true
        WHERE t.max_running IS NULL OR t.max_running > 0
    ), open AS (
        SELECT s.*, CASE WHEN s.cap IS NULL THEN NULL
                         ELSE hashtextextended('nekton.claim.' || s.tenant_id, 0) END AS lock_key
        FROM settings s
        WHERE s.cap IS NULL
           OR (SELECT count(*) FROM jobs r WHERE r.tenant_id = s.tenant_id AND r.state = 'running') < s.cap
    )
    SELECT array_agg(o.tenant_id), array_agg(o.weight), array_agg(o.cap),
           array_agg(DISTINCT o.lock_key ORDER BY o.lock_key) FILTER (WHERE o.lock_key IS NOT NULL)
    INTO v_tenants, v_weights, v_caps, v_keys
    FROM open o;

    IF v_tenants IS NULL THEN
        RETURN;
    END IF;
    IF v_keys IS NOT NULL THEN
        FOREACH v_key IN ARRAY v_keys LOOP
            PERFORM pg_advisory_xact_lock(v_key);
        END LOOP;
    END IF;

    -- 2. A fresh snapshot: share the free slots by weight and lock the jobs.
    WITH tenant AS (
        SELECT u.tenant_id, u.weight, u.cap,
               (SELECT count(*) FROM jobs r WHERE r.tenant_id = u.tenant_id AND r.state = 'running') AS running
        FROM unnest(v_tenants, v_weights, v_caps) AS u (tenant_id, weight, cap)
    ), avail AS MATERIALIZED (
        -- How many each tenant could take now (at most its room), and its oldest runnable job.
        SELECT t.tenant_id, t.weight, t.running, c.n, c.oldest
        FROM tenant t CROSS JOIN LATERAL (
            SELECT count(*) AS n, min(w.run_at) AS oldest FROM (
                SELECT j.run_at FROM jobs j
                WHERE j.queue = p_queue AND j.tenant_id = t.tenant_id
                  AND j.state IN ('queued', 'scheduled') AND j.run_at <= now()
                ORDER BY j.priority DESC, j.run_at, j.id
                LIMIT least(p_limit, coalesce(t.cap - t.running, p_limit))) w
        ) c
        WHERE (t.cap IS NULL OR t.running < t.cap) AND c.n > 0
    ), share AS MATERIALIZED (
        -- The k-th extra job of a tenant would bring it to (running + k) / weight: the smallest
        -- tags win (ties: the tenant whose runnable work is oldest).
        SELECT a.tenant_id, count(*) AS n FROM (
            SELECT v.tenant_id FROM avail v CROSS JOIN LATERAL generate_series(1, v.n) AS k
            ORDER BY (v.running + k)::float8 / v.weight, v.oldest, v.tenant_id
            LIMIT p_limit) a
        GROUP BY a.tenant_id
    )
    SELECT array_agg(p.id ORDER BY p.priority DESC, p.run_at, p.id) INTO v_ids
    FROM share s CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at FROM jobs j
        WHERE j.queue = p_queue AND j.tenant_id = s.tenant_id
          AND j.state IN ('queued', 'scheduled') AND j.run_at <= now()
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT s.n
        FOR UPDATE SKIP LOCKED) p;

    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    -- 3. Claim the locked jobs. No state condition here: the rows are locked since the pick
    -- checked it, and a condition matching jobs_tenant_claimable's predicate would let a plan
    -- made while the table was empty read that whole index instead of the primary key.
    RETURN QUERY
    WITH claimed AS (
        UPDATE jobs j SET state = 'running', attempt = j.attempt + 1, worker_id = p_worker, started_at = now()
        WHERE j.id = ANY (v_ids)
        RETURNING j.id, j.attempt, j.max_attempts,
            (extract(epoch FROM (now() - j.run_at)) * 1000)::bigint AS wait_ms
    ), lease AS (
        INSERT INTO leases (job_id, attempt, worker_id, expires_at)
        SELECT c.id, c.attempt, p_worker, now() + p_lease_ms * interval '1 millisecond' FROM claimed c
        ON CONFLICT (job_id) DO UPDATE SET attempt = EXCLUDED.attempt, worker_id = EXCLUDED.worker_id,
            expires_at = EXCLUDED.expires_at
    )
    SELECT c.id, c.attempt, c.max_attempts, c.wait_ms, s.spec
    FROM claimed c CROSS JOIN LATERAL (
        SELECT js.spec FROM job_specs js WHERE js.job_id = c.id LIMIT 1) s
    ORDER BY array_position(v_ids, c.id);
END
$$;
