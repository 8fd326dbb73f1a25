-- The same chain with the claim committed asynchronously (set_config(..., true): for its own
-- transaction only), as nekton's claim does: two WAL flushes per job, submit and completion.
INSERT INTO floor_jobs (state, spec) VALUES ('queued', repeat('x', 300)) RETURNING id \gset
WITH u AS (UPDATE floor_jobs SET state = 'running' WHERE id = :id RETURNING id)
SELECT set_config('synchronous_commit', 'off', true), u.id FROM u;
BEGIN;
INSERT INTO floor_chunks VALUES (:id, 1, '\x68656c6c6f0a');
UPDATE floor_jobs SET state = 'succeeded' WHERE id = :id;
COMMIT;
