-- Log chunks are up to 64 KiB of bytes written once and read a few times: store them out of line
-- without compression. pglz on every chunk cost more CPU than anything else on the log path.
ALTER TABLE log_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
