-- A job's spec, its attempts and its place in its batch's finish order no longer check their job
-- row with a foreign key (issue 15: fewer, cheaper statements per job).
--
-- Each of these rows is written once per job on the hot path (submission, completion), and a
-- foreign key's check is a query of its own per row: an index descent into `jobs` and a
-- FOR KEY SHARE lock on the job's tuple (a WAL record, and a multixact when the tuple is already
-- locked), for a parent the same statement has just inserted or updated. Measured on this
-- machine kind: 7-12 µs of PostgreSQL CPU per child row, three rows per job.
--
-- What the keys promised holds by construction (ARCHITECTURE.md, "Invariants"):
-- - every insert of a child takes its job id from a row of `jobs` the same statement inserted or
--   updated (submission's `RETURNING`, the flush's and the rescue's `done`, the cancel's update,
--   the `jobs_finished_seq` trigger's transition table), so no child is written without its job;
-- - jobs are deleted only by retention (`store::queue::prune`), which now deletes these children
--   in the same statement, as it already did for log chunks and artifacts (which never had keys).
ALTER TABLE job_specs DROP CONSTRAINT job_specs_job_id_fkey;
ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_job_id_fkey;
ALTER TABLE batch_finishes DROP CONSTRAINT batch_finishes_job_id_fkey;
