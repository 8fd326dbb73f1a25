-- Helpers for flush-one.sql (pgbench cannot take `:` inside literals): a hello job's bill, spec
-- and labels as the service stores them. Run once on a database `nekton migrate` set up:
--   psql -d nekton -f load-tests/floor/flush-one-setup.sql
CREATE OR REPLACE FUNCTION bench_usage() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
SELECT ARRAY['{"queue_wait_ms":0,"setup_ms":0,"wall_ms":0,"cpu_user_ms":0,"cpu_system_ms":0,"memory_peak_bytes":65536,"pids_peak":null,"pids_limit_hit":null,"disk_used_bytes":0,"stdout_bytes":13,"stderr_bytes":0,"stdout_truncated":false,"stderr_truncated":false,"fuel_consumed":12,"wasm_memory_peak_bytes":65536,"net_rx_bytes":null,"net_tx_bytes":null}']
$$;
CREATE OR REPLACE FUNCTION bench_spec() RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
SELECT '{"program":"hello","args":[],"env":{}}'::jsonb
$$;
CREATE OR REPLACE FUNCTION bench_labels() RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
SELECT '{"load-test":"latency"}'::jsonb
$$;
