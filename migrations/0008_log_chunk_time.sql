-- When each chunk of output was stored: what `GET /v1/jobs/{id}/logs` filters on (`since`) and
-- prints (`timestamps`), and what the `log` events of the stream carry (`at`).
--
-- Added without a default first, so existing rows are not rewritten (adding a column with a
-- volatile default would rewrite the table); the default then applies to new rows only. Chunks
-- stored before this migration have no time: `since` leaves them out and `timestamps` marks them
-- with `-` (docs/queue.md, "Log times").
--
-- now() is the writer's transaction start: the chunks of one flush share it, and it is within the
-- writer's flush interval of when the job wrote them.
ALTER TABLE log_chunks ADD COLUMN stored_at timestamptz;
ALTER TABLE log_chunks ALTER COLUMN stored_at SET DEFAULT now();
