-- Webhooks: tenants' endpoints, the outbox of deliveries, and the log of every attempt. A job's
-- move into a final state and its webhook rows commit together (a trigger on `jobs`). See
-- docs/webhooks.md.

-- A time-ordered UUID (version 7) made in SQL: PostgreSQL 15 only makes version 4.
CREATE FUNCTION nekton_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
        PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
        FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;

-- RFC 3339 in UTC with microseconds, whatever the session's time zone.
CREATE FUNCTION nekton_rfc3339(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE TABLE webhooks (
    id         uuid PRIMARY KEY,
    tenant_id  text        NOT NULL REFERENCES tenants (id),
    url        text        NOT NULL,
    events     text[]      NOT NULL,
    -- `whsec_` + base64 of 32 random bytes. Kept as is: the server signs with it.
    secret     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    CONSTRAINT webhooks_events CHECK (cardinality(events) > 0
        AND events <@ ARRAY['job.completed', 'batch.completed']::text[])
);
-- The trigger's lookup: a tenant's live endpoints (an index-only probe when it has none).
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, created_at) WHERE deleted_at IS NULL;

-- The outbox: one row per event and endpoint, written in the transaction that finished the job.
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,            -- UUIDv7; sent as `webhook-id` on every attempt
    webhook_id      uuid        NOT NULL REFERENCES webhooks (id),
    tenant_id       text        NOT NULL,
    event           text        NOT NULL,        -- job.completed, batch.completed
    payload         jsonb       NOT NULL,        -- the body: {type, timestamp, data}
    state           text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,  -- +1 at every claim: the fencing token
    -- pending: when the next attempt is due; delivering: when the claim's lease ends (a process
    -- that died mid-attempt leaves the row due again then).
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Retries go on for at least the retry window after retry_from; retry_base is `attempts`
    -- at that moment (the backoff's exponent counts from it). A manual redelivery resets both.
    retry_from      timestamptz NOT NULL DEFAULT now(),
    retry_base      integer     NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    CONSTRAINT webhook_deliveries_state CHECK (state IN ('pending', 'delivering', 'delivered', 'failed'))
);
-- The delivery loop's claim: an ordered scan of due rows only.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state IN ('pending', 'delivering');
-- An endpoint's log, newest first.
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (webhook_id, id DESC);
-- Retention.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (created_at)
    WHERE state IN ('delivered', 'failed');

-- Every attempt of a delivery: what the receiver answered, or why there was no answer.
CREATE TABLE webhook_attempts (
    delivery_id uuid        NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    status      integer,                 -- the HTTP status, when there was an answer
    error       text,                    -- why it failed (NULL: delivered)
    duration_ms integer,
    PRIMARY KEY (delivery_id, attempt)
);

-- Jobs of a batch that reached a final state: the statement that finishes the last one (under
-- the batch row's lock) emits batch.completed exactly once.
ALTER TABLE batches ADD COLUMN finished integer NOT NULL DEFAULT 0;
UPDATE batches b SET finished = f.k
FROM (SELECT batch_id, count(*)::int AS k FROM jobs
      WHERE batch_id IS NOT NULL AND state IN ('succeeded', 'failed', 'cancelled', 'error')
      GROUP BY batch_id) f
WHERE b.id = f.batch_id;

-- Runs once per UPDATE statement on jobs (the worker completes up to 150 jobs per statement):
-- returns at once unless the statement moved a job into a final state; then counts batches and
-- writes one outbox row per subscribed endpoint of the job's tenant. Every path into a final
-- state (completion, cancel of a waiting job, rescue) is an UPDATE of jobs, so none is missed.
CREATE FUNCTION nekton_jobs_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    b_ids uuid[];
    b_counts integer[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE state IN ('succeeded', 'failed', 'cancelled', 'error')) THEN
        RETURN NULL;
    END IF;

    SELECT array_agg(f.batch_id ORDER BY f.batch_id), array_agg(f.k ORDER BY f.batch_id)
    INTO b_ids, b_counts
    FROM (SELECT n.batch_id, count(*)::int AS k
          FROM new_rows n JOIN old_rows o ON o.id = n.id
          WHERE n.batch_id IS NOT NULL
            AND n.state IN ('succeeded', 'failed', 'cancelled', 'error')
            AND o.state NOT IN ('succeeded', 'failed', 'cancelled', 'error')
          GROUP BY n.batch_id) f;
    IF b_ids IS NOT NULL THEN
        -- Locks in id order: two statements finishing jobs of the same batches never wait on
        -- each other in a cycle.
        PERFORM 1 FROM batches WHERE id = ANY (b_ids) ORDER BY id FOR UPDATE;
        WITH counted AS (
            UPDATE batches b SET finished = b.finished + u.k
            FROM unnest(b_ids, b_counts) AS u(id, k)
            WHERE b.id = u.id
            RETURNING b.id, b.tenant_id, b.total, b.finished, b.labels, b.created_at, u.k
        ), done AS (
            SELECT * FROM counted WHERE finished >= total AND finished - k < total
        )
        INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event, payload)
        SELECT nekton_uuid_v7(), w.id, d.tenant_id, 'batch.completed',
            jsonb_build_object('type', 'batch.completed',
                'timestamp', nekton_rfc3339(clock_timestamp()),
                'data', jsonb_build_object('id', d.id, 'total', d.total, 'labels', d.labels,
                    'created_at', nekton_rfc3339(d.created_at), 'counts', c.counts))
        FROM done d
        JOIN webhooks w ON w.tenant_id = d.tenant_id AND w.deleted_at IS NULL
            AND 'batch.completed' = ANY (w.events)
        CROSS JOIN LATERAL (
            SELECT jsonb_build_object(
                'succeeded', count(*) FILTER (WHERE j.state = 'succeeded'),
                'failed', count(*) FILTER (WHERE j.state = 'failed'),
                'cancelled', count(*) FILTER (WHERE j.state = 'cancelled'),
                'error', count(*) FILTER (WHERE j.state = 'error')) AS counts
            FROM jobs j WHERE j.batch_id = d.id) c;
    END IF;

    INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event, payload)
    SELECT nekton_uuid_v7(), w.id, n.tenant_id, 'job.completed',
        jsonb_build_object('type', 'job.completed',
            'timestamp', nekton_rfc3339(coalesce(n.finished_at, clock_timestamp())),
            'data', jsonb_build_object('id', n.id, 'state', n.state, 'attempt', n.attempt,
                'queue', n.queue, 'batch_id', n.batch_id, 'program', s.program,
                'labels', coalesce(s.labels, '{}'::jsonb),
                'outcome', CASE WHEN a.reason IS NULL THEN NULL ELSE jsonb_build_object(
                    'reason', a.reason, 'exit_code', a.exit_code, 'signal', a.signal,
                    'detail', a.detail) END,
                'usage', a.usage,
                'created_at', nekton_rfc3339(n.created_at),
                'started_at', nekton_rfc3339(n.started_at),
                'finished_at', nekton_rfc3339(n.finished_at)))
    FROM new_rows n
    JOIN old_rows o ON o.id = n.id
    JOIN webhooks w ON w.tenant_id = n.tenant_id AND w.deleted_at IS NULL
        AND 'job.completed' = ANY (w.events)
    LEFT JOIN job_specs s ON s.job_id = n.id
    LEFT JOIN job_attempts a ON a.job_id = n.id AND a.attempt = n.attempt
    WHERE n.state IN ('succeeded', 'failed', 'cancelled', 'error')
      AND o.state NOT IN ('succeeded', 'failed', 'cancelled', 'error');
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_finished AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION nekton_jobs_finished();
