-- Artifacts: the files a job asked for (`artifacts` in its spec), collected from its writable
-- state after each attempt and stored here by the worker before the attempt's completion, fenced
-- to the attempt like every worker write (services/src/store/artifacts.rs, docs/artifacts.md).
--
-- Three insert-only tables keyed by (job, attempt): the listing, the matches that were not
-- collected, and the bytes. No foreign key to jobs, like log_chunks: retention deletes them
-- explicitly, in the same statement that deletes the job's logs (store/queue.rs::prune).

-- One row per collected file, `idx` its place in the listing (sorted as collected).
CREATE TABLE job_artifacts (
    job_id       uuid    NOT NULL,
    attempt      integer NOT NULL,
    idx          integer NOT NULL,
    path         text    NOT NULL,  -- as collected; a test suite's case files under cases/NAME/
    size         bigint  NOT NULL,  -- the file's size when collected
    stored_bytes bigint  NOT NULL,  -- the bytes kept: less than size when a cap cut the file
    truncated    boolean NOT NULL,
    sha256       bytea   NOT NULL,  -- of the stored bytes
    mode         integer NOT NULL,  -- Unix permission bits
    PRIMARY KEY (job_id, attempt, idx)
);
-- A download names the file by its path.
CREATE UNIQUE INDEX job_artifacts_path ON job_artifacts (job_id, attempt, path);

-- Matches that were not collected (symlinks, hard links, directories, past the caps...), with
-- why. `path` may be empty for a note about the walk itself (it stopped, entries left out).
CREATE TABLE job_artifacts_skipped (
    job_id  uuid    NOT NULL,
    attempt integer NOT NULL,
    idx     integer NOT NULL,
    path    text    NOT NULL,
    reason  text    NOT NULL,
    PRIMARY KEY (job_id, attempt, idx)
);

-- The stored bytes of each file in pieces of at most 1 MiB, numbered from 0, so a download is
-- streamed one row at a time and no row comes near bytea's 1 GB limit. Stored out of line
-- without compression, like log chunks (artifacts are often compressed already).
CREATE TABLE artifact_chunks (
    job_id  uuid    NOT NULL,
    attempt integer NOT NULL,
    idx     integer NOT NULL,
    seq     integer NOT NULL,
    data    bytea   NOT NULL,
    PRIMARY KEY (job_id, attempt, idx, seq)
);
ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
