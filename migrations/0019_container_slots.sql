-- Wasm and container jobs get concurrency of their own (issue 15: throughput). A worker's slots
-- bound every job it runs; a container job also takes one of the worker's container slots, fewer
-- by default, since each container costs a process tree, a cgroup and a core while it computes,
-- where a Wasm job on the same slot mostly waits for its output and result to be stored. The
-- claim is told both: `p_limit` jobs at most, `p_containers` of them image jobs at most. It picks
-- and shares exactly as before (priority, age, fair share by weight), then keeps every Wasm job
-- and the first `p_containers` image jobs of its pick in that order; the image jobs past them are
-- left waiting where they are, for the next claim of a worker with a container slot free. A job
-- counts as a container job when its stored spec names an image (`program.kind`, or `image` in
-- rows written before the spec was versioned) and its runtime is not `wasm` (an image on `auto`
-- counts: whether it holds a Wasm module is known only once it is pulled). Read with one
-- primary-key probe per picked job, and only when the cap can bind.
--
-- The function is the one of 0015_lease_on_jobs.sql (see 0005_fair_claim.sql for how and why
-- it works) with step 2b added. The four-argument form stays, for workers of the previous
-- version: it claims with no container cap, as they did.
CREATE FUNCTION nekton_claim(p_queue text, p_limit integer, p_worker uuid, p_lease_ms bigint,
                             p_containers integer)
RETURNS TABLE (id uuid, attempt integer, max_attempts integer, wait_ms bigint, spec jsonb,
               tenant_id text, traceparent text)
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

    -- 2b. At most p_containers of them may be image (container) jobs: those past it stay waiting,
    -- in their place (their row locks end with this statement). Only when the cap can bind.
    IF p_containers IS NOT NULL AND p_containers < cardinality(v_ids) THEN
        SELECT array_agg(k.id ORDER BY k.ord) INTO v_ids
        FROM (
            SELECT u.id, u.ord, c.container,
                   row_number() OVER (PARTITION BY c.container ORDER BY u.ord) AS nth
            FROM unnest(v_ids) WITH ORDINALITY AS u (id, ord)
            CROSS JOIN LATERAL (
                SELECT (coalesce(js.spec -> 'program' ->> 'kind' = 'image', false) OR js.spec ? 'image')
                       AND coalesce(js.spec ->> 'runtime', 'auto') <> 'wasm' AS container
                FROM job_specs js WHERE js.job_id = u.id LIMIT 1) c
        ) k
        WHERE NOT k.container OR k.nth <= p_containers;
        IF v_ids IS NULL THEN
            RETURN;
        END IF;
    END IF;

    -- 3. Claim the locked jobs, each with its lease (the lease is the row's lease_expires_at: no
    -- row in another table). No state condition here: the rows are locked since the pick
    -- checked it, and a condition matching jobs_tenant_claimable's predicate would let a plan
    -- made while the table was empty read that whole index instead of the primary key.
    RETURN QUERY
    WITH claimed AS (
        UPDATE jobs j SET state = 'running', attempt = j.attempt + 1, worker_id = p_worker, started_at = now(),
            lease_expires_at = now() + p_lease_ms * interval '1 millisecond'
        WHERE j.id = ANY (v_ids)
        RETURNING j.id, j.attempt, j.max_attempts, j.tenant_id,
            (extract(epoch FROM (now() - j.run_at)) * 1000)::bigint AS wait_ms
    )
    SELECT c.id, c.attempt, c.max_attempts, c.wait_ms, s.spec, c.tenant_id, s.traceparent
    FROM claimed c CROSS JOIN LATERAL (
        SELECT js.spec, js.traceparent FROM job_specs js WHERE js.job_id = c.id LIMIT 1) s
    ORDER BY array_position(v_ids, c.id);
END
$$;

CREATE OR REPLACE FUNCTION nekton_claim(p_queue text, p_limit integer, p_worker uuid, p_lease_ms bigint)
RETURNS TABLE (id uuid, attempt integer, max_attempts integer, wait_ms bigint, spec jsonb,
               tenant_id text, traceparent text)
LANGUAGE sql VOLATILE
AS $$
    SELECT * FROM nekton_claim(p_queue, p_limit, p_worker, p_lease_ms, NULL)
$$;
