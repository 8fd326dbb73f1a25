-- A lone job's flush as the writer sends it on the embedded database (NULL channels, its answer
-- asked for), on a job stored as handed to the worker. After flush-one-setup.sql:
--   PGOPTIONS='-c synchronous_commit=off' pgbench -n -M prepared -f load-tests/floor/flush-one.sql -c 1 -T 10 -r nekton
-- (synchronous commit off: the statements' own work, without the WAL flush each autocommit waits for).
INSERT INTO jobs (id, tenant_id, state, queue, max_attempts, attempt, worker_id, started_at, lease_expires_at) VALUES (nekton_uuid_v7(), 'default', 'running', 'default', 1, 1, '01a24f9a-1873-738c-b2a7-3b45dccb1fea', now(), now() + interval '1 minute') RETURNING id AS jid \gset
INSERT INTO job_specs (job_id, spec, spec_hash, program, labels) VALUES (:jid::uuid, bench_spec(), '\x00', 'hello', bench_labels());
SELECT * FROM nekton_flush('01a24f9a-1873-738c-b2a7-3b45dccb1fea', ARRAY[:jid::uuid], '{1}', '{succeeded}', '{NULL}', '{exited}', '{0}', '{NULL}', '{NULL}', bench_usage(), NULL, '{NULL}', ARRAY[:jid::uuid], '{1}', '{1}', '{1}', '{"\\x68656c6c6f2c20776f726c640a"}', NULL, ARRAY[:jid::uuid], '{}');
