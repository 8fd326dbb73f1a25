-- A job's three transitions, each committed durably: submit (INSERT), claim (UPDATE),
-- completion (its output chunk and the final state in one transaction).
INSERT INTO floor_jobs (state, spec) VALUES ('queued', repeat('x', 300)) RETURNING id \gset
UPDATE floor_jobs SET state = 'running' WHERE id = :id;
BEGIN;
INSERT INTO floor_chunks VALUES (:id, 1, '\x68656c6c6f0a');
UPDATE floor_jobs SET state = 'succeeded' WHERE id = :id;
COMMIT;
