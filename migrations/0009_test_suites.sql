-- Test suites (see services/src/grading): the summary of a suite's attempt — cases passed, score,
-- the build's result — beside the attempt's outcome. NULL for jobs that are not suites.
-- Per-case events live in log_chunks as stream 3 (one JSON event per chunk), in order with the
-- build's output; no new table, so retention, resume and NOTIFY work as for output.
ALTER TABLE job_attempts ADD COLUMN tests jsonb;

-- Whether a job is a test suite, for its record (`suite: true`) — job listings read this column,
-- never the spec itself, which can be large.
ALTER TABLE job_specs ADD COLUMN suite boolean NOT NULL DEFAULT false;
