-- The claim of a lone tenant's jobs in one statement (issue 15: fewer, cheaper statements per
-- job). When one tenant has jobs waiting (in any queue) and it has no `max_running` cap, the claim
-- is every free slot from its head of this queue, whatever it runs already (0024). Until now the
-- function still found that out the long way first: step 1's loose index scan over the tenants,
-- its probe for this queue and the tenant's settings, aggregated into arrays; then step 2 picked
-- into an array, and step 3 updated the rows named by it, joined the specs and sorted them by
-- their place in the array. Each of the three reads of the tenant's head walked the queue's dead
-- head again (the index entries of the jobs claimed since the last vacuum).
--
-- Step 0 now asks the two questions that decide it, each an index probe: which tenant has the
-- first waiting job in `jobs_tenant_claimable` (the first of the tenants step 1 would list), and
-- whether any tenant after it has one; then whether that tenant has a cap (a `tenants` row with
-- `max_running` set: a cap of 0, a pause, included). One tenant, uncapped: the pick (the same
-- order, the same `FOR UPDATE SKIP LOCKED`, at most `p_limit`), 2b's container cap, the update
-- with the lease and the specs are one statement. Anything else — several tenants waiting, a capped
-- or paused one — takes steps 1 to 3 as before, so the shares, caps and locks are theirs. The
-- condition is stricter than step 2's fast path (a tenant waiting only in another queue sends the
-- claim down the long way, which then takes that fast path): the jobs claimed are those steps 1
-- to 3 would claim, in the same order.
--
-- Measured with pgbench and in the drain: load-tests/README.md, "The claim of a lone tenant in one
-- statement (migration 0026)".
--
-- The function is 0024_claim_one_tenant.sql's (a migration restates the whole body of the
-- function it replaces) with step 0 added; the four-argument form calls it, unchanged.
CREATE OR REPLACE FUNCTION nekton_claim(p_queue text, p_limit integer, p_worker uuid, p_lease_ms bigint,
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
    v_first text;
BEGIN
    IF p_limit IS NULL OR p_limit <= 0 THEN
        RETURN;
    END IF;

    -- 0. One tenant waiting, uncapped: its claim in one statement (the header says why).
    SELECT j.tenant_id INTO v_first FROM jobs j
    WHERE j.state IN ('queued', 'scheduled')
    ORDER BY j.tenant_id LIMIT 1;
    IF v_first IS NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM jobs j
                   WHERE j.state IN ('queued', 'scheduled') AND j.tenant_id > v_first)
       AND NOT EXISTS (SELECT 1 FROM tenants t
                       WHERE t.id = v_first AND t.max_running IS NOT NULL) THEN
        RETURN QUERY
        WITH picked AS (
            SELECT j.id, j.priority, j.run_at FROM jobs j
            WHERE j.queue = p_queue AND j.tenant_id = v_first
              AND j.state IN ('queued', 'scheduled') AND j.run_at <= now()
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ), kinds AS (
            -- Each job's spec, and whether it takes a container slot (2b's rule).
            SELECT p.id, p.priority, p.run_at, s.spec, s.traceparent, k.container,
                   row_number() OVER (PARTITION BY k.container
                                      ORDER BY p.priority DESC, p.run_at, p.id) AS nth
            FROM picked p
            CROSS JOIN LATERAL (
                SELECT js.spec, js.traceparent FROM job_specs js WHERE js.job_id = p.id LIMIT 1) s
            CROSS JOIN LATERAL (
                SELECT (coalesce(s.spec -> 'program' ->> 'kind' = 'image', false) OR s.spec ? 'image')
                       AND coalesce(s.spec ->> 'runtime', 'auto') <> 'wasm' AS container) k
        ), chosen AS MATERIALIZED (
            -- At most p_containers image jobs: those past it stay waiting, in their place.
            SELECT * FROM kinds k
            WHERE p_containers IS NULL OR NOT k.container OR k.nth <= p_containers
        ), claimed AS (
            -- No state condition (step 3 says why): the rows are locked since the pick.
            UPDATE jobs j SET state = 'running', attempt = j.attempt + 1, worker_id = p_worker,
                started_at = now(), lease_expires_at = now() + p_lease_ms * interval '1 millisecond'
            FROM chosen c
            WHERE j.id = c.id
            RETURNING j.id, j.attempt, j.max_attempts, j.tenant_id,
                (extract(epoch FROM (now() - j.run_at)) * 1000)::bigint AS wait_ms
        )
        SELECT u.id, u.attempt, u.max_attempts, u.wait_ms, c.spec, u.tenant_id, c.traceparent
        FROM claimed u JOIN chosen c ON c.id = u.id
        ORDER BY c.priority DESC, c.run_at, c.id;
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

    -- 2. A fresh snapshot: share the free slots by weight and lock the jobs. With one tenant
    -- waiting and no cap (the common case), its share is every free slot: the pick at once,
    -- without counting its running jobs and its runnable ones first.
    IF cardinality(v_tenants) = 1 AND v_caps[1] IS NULL THEN
        SELECT array_agg(p.id ORDER BY p.priority DESC, p.run_at, p.id) INTO v_ids
        FROM (SELECT j.id, j.priority, j.run_at FROM jobs j
              WHERE j.queue = p_queue AND j.tenant_id = v_tenants[1]
                AND j.state IN ('queued', 'scheduled') AND j.run_at <= now()
              ORDER BY j.priority DESC, j.run_at, j.id
              LIMIT p_limit
              FOR UPDATE SKIP LOCKED) p;
    ELSE
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
    END IF;

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
