-- nekton's job queue. See ARCHITECTURE.md and docs/queue.md for the rules this schema keeps.
-- The hot row (jobs) is narrow and holds only the state machine; everything written once lives in
-- its own table.

CREATE TYPE job_state AS ENUM ('queued', 'scheduled', 'running', 'succeeded', 'failed', 'cancelled', 'error');

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,              -- UUIDv7: time-ordered
    tenant_id        text        NOT NULL,
    state            job_state   NOT NULL DEFAULT 'queued',
    queue            text        NOT NULL,
    priority         smallint    NOT NULL DEFAULT 0, -- higher runs first
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempt          integer     NOT NULL DEFAULT 0, -- fencing token: +1 at every claim
    max_attempts     integer     NOT NULL,
    lost_count       integer     NOT NULL DEFAULT 0, -- attempts lost with their worker
    worker_id        uuid,
    cancel_requested boolean     NOT NULL DEFAULT false,
    batch_id         uuid,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    CONSTRAINT jobs_attempts_positive CHECK (max_attempts >= 1)
);

-- The claim reads only this partial index, however many finished jobs exist.
CREATE INDEX jobs_claimable ON jobs (queue, priority DESC, run_at, id) WHERE state IN ('queued', 'scheduled');
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_tenant_listing ON jobs (tenant_id, id DESC);
CREATE INDEX jobs_batch ON jobs (batch_id, id) WHERE batch_id IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Written once at submission, never updated.
CREATE TABLE job_specs (
    job_id    uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    spec      jsonb NOT NULL,
    spec_hash bytea NOT NULL,      -- sha256 of the canonical request, for Idempotency-Key checks
    program   text  NOT NULL,      -- module digest or image reference, for listings
    labels    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX job_specs_labels ON job_specs USING gin (labels jsonb_path_ops);

-- One row per running job, renewed by its worker's heartbeat.
CREATE TABLE leases (
    job_id     uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    attempt    integer     NOT NULL,
    worker_id  uuid        NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX leases_expiry ON leases (expires_at);

-- The result of each attempt (attempt 0: a job cancelled before it ever ran).
CREATE TABLE job_attempts (
    job_id      uuid    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    worker_id   uuid,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    reason      text    NOT NULL,
    exit_code   integer,
    signal      integer,
    detail      text,
    usage       jsonb,
    PRIMARY KEY (job_id, attempt)
);

-- Insert-only output. The SSE event id is derived from (attempt, seq), so resuming is one
-- primary-key range scan. No foreign key: retention deletes chunks explicitly, in batches.
CREATE TABLE log_chunks (
    job_id  uuid     NOT NULL,
    attempt integer  NOT NULL,
    seq     integer  NOT NULL,
    stream  smallint NOT NULL,  -- 1 stdout, 2 stderr
    data    bytea    NOT NULL,
    PRIMARY KEY (job_id, attempt, seq)
);

CREATE TABLE batches (
    id              uuid PRIMARY KEY,
    tenant_id       text        NOT NULL,
    total           integer     NOT NULL,
    labels          jsonb       NOT NULL DEFAULT '{}',
    idempotency_key text,
    spec_hash       bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX batches_idempotency ON batches (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Uploaded Wasm modules, content-addressed per tenant.
CREATE TABLE modules (
    tenant_id  text        NOT NULL,
    digest     text        NOT NULL,
    size_bytes bigint      NOT NULL,
    bytes      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, digest)
);
CREATE INDEX modules_digest ON modules (digest);
