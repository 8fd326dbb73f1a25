-- One durable transition: an INSERT in its own transaction (synchronous commit: waits for the
-- WAL flush).
INSERT INTO floor_jobs (state, spec) VALUES ('queued', repeat('x', 300));
