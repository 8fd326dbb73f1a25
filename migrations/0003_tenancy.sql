-- Tenancy: tenants with their quotas, API tokens (hashes only), the audit log and the usage
-- rollup a platform bills from. See docs/tenancy.md.

CREATE TABLE tenants (
    id               text PRIMARY KEY,           -- a name: [a-z0-9][a-z0-9_-]{0,62}
    weight           integer     NOT NULL DEFAULT 1,  -- share of the workers under contention
    max_running      integer,                    -- NULL: no cap
    max_queued       integer,                    -- queued + scheduled jobs
    submit_rate      double precision,           -- jobs per second (token bucket); NULL: no cap
    submit_burst     integer,                    -- bucket size (default: max(1, rate))
    max_memory_bytes bigint,                     -- per-job maxima below the operator's
    max_wall_time_ms bigint,
    max_cpu_time_ms  bigint,
    max_output_bytes bigint,
    allow_bridge     boolean     NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_weight CHECK (weight BETWEEN 1 AND 1000),
    CONSTRAINT tenants_caps CHECK (max_running >= 0 AND max_queued >= 0 AND submit_rate > 0
        AND submit_burst >= 1 AND max_memory_bytes > 0 AND max_wall_time_ms > 0
        AND max_cpu_time_ms > 0 AND max_output_bytes >= 0)
);

-- Every object written before tenancy belongs to the default tenant.
INSERT INTO tenants (id) SELECT 'default'
UNION SELECT DISTINCT tenant_id FROM jobs
UNION SELECT DISTINCT tenant_id FROM batches
UNION SELECT DISTINCT tenant_id FROM modules;

-- A token is `nk_` + 32 random base62 characters; only its SHA-256 is kept.
CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    tenant_id    text        NOT NULL REFERENCES tenants (id),
    name         text        NOT NULL DEFAULT '',
    secret_hash  bytea       NOT NULL UNIQUE,
    hint         text        NOT NULL,           -- `nk_` + the first 4 characters, for listings
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id, created_at);

-- Submit rate buckets (only tenants with a submit_rate have a row).
CREATE TABLE tenant_buckets (
    tenant_id  text PRIMARY KEY REFERENCES tenants (id),
    tokens     double precision NOT NULL,
    updated_at timestamptz      NOT NULL DEFAULT clock_timestamp()
);

-- The images a tenant pulled, imported or ran (a worker host's image store is shared; a tenant
-- sees only these in listings).
CREATE TABLE tenant_images (
    tenant_id  text        NOT NULL,
    reference  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, reference)
);

-- Who changed what, when: tokens, tenants, quotas, cancels, webhooks.
CREATE TABLE audit_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    tenant_id text,                    -- the actor's tenant (NULL: the server itself)
    token_id  uuid,                    -- the actor's token (NULL: the server itself)
    action    text        NOT NULL,    -- e.g. token.create, tenant.update, job.cancel
    target    text        NOT NULL,
    detail    jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Usage, rolled up per tenant and hour as attempts end (a trigger on job_attempts), so the bill
-- outlives job retention. outcome is the attempt's reason (exited, signaled, wall_timeout, ...).
CREATE TABLE usage_hourly (
    tenant_id          text        NOT NULL,
    hour               timestamptz NOT NULL,
    outcome            text        NOT NULL,
    attempts           bigint      NOT NULL DEFAULT 0,
    jobs_succeeded     bigint      NOT NULL DEFAULT 0,
    jobs_failed        bigint      NOT NULL DEFAULT 0,
    jobs_cancelled     bigint      NOT NULL DEFAULT 0,
    jobs_error         bigint      NOT NULL DEFAULT 0,
    cpu_ms             bigint      NOT NULL DEFAULT 0,
    memory_byte_ms     numeric     NOT NULL DEFAULT 0,
    wall_ms            bigint      NOT NULL DEFAULT 0,
    output_bytes       bigint      NOT NULL DEFAULT 0,
    net_rx_bytes       bigint      NOT NULL DEFAULT 0,
    net_tx_bytes       bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, hour, outcome)
);

CREATE FUNCTION nekton_usage_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t text;
    s job_state;
    u jsonb := coalesce(NEW.usage, '{}');
    wall bigint := coalesce((u->>'wall_ms')::bigint, 0);
    mem bigint := coalesce((u->>'memory_peak_bytes')::bigint, (u->>'wasm_memory_peak_bytes')::bigint, 0);
BEGIN
    SELECT tenant_id, state INTO t, s FROM jobs WHERE id = NEW.job_id;
    IF t IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO usage_hourly AS h (tenant_id, hour, outcome, attempts, jobs_succeeded, jobs_failed,
        jobs_cancelled, jobs_error, cpu_ms, memory_byte_ms, wall_ms, output_bytes, net_rx_bytes, net_tx_bytes)
    VALUES (t, date_trunc('hour', NEW.finished_at), NEW.reason, 1,
        (s = 'succeeded')::int, (s = 'failed')::int, (s = 'cancelled')::int, (s = 'error')::int,
        coalesce((u->>'cpu_user_ms')::bigint, 0) + coalesce((u->>'cpu_system_ms')::bigint, 0),
        mem::numeric * wall, wall,
        coalesce((u->>'stdout_bytes')::bigint, 0) + coalesce((u->>'stderr_bytes')::bigint, 0),
        coalesce((u->>'net_rx_bytes')::bigint, 0), coalesce((u->>'net_tx_bytes')::bigint, 0))
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

CREATE TRIGGER job_attempts_usage AFTER INSERT ON job_attempts
    FOR EACH ROW EXECUTE FUNCTION nekton_usage_rollup();

-- Waiting jobs per tenant: max_queued counts them, the fair claim finds tenants with work.
CREATE INDEX jobs_tenant_waiting ON jobs (tenant_id, queue) WHERE state IN ('queued', 'scheduled');
