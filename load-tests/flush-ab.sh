#!/usr/bin/env bash
# Two versions of the writer's flush, call by call in one backend (issue 15; load-tests/README.md,
# "The flush accounts for itself (migration 0027)"): for differences of a few percent, which CPU
# readings over separate runs (flush-cpu.sh) cannot resolve on this VM, whose speed drifts by
# more than that from one minute to the next.
#
#   load-tests/flush-ab.sh ROUNDS A.sql B.sql [N]      # N: jobs per call, default 22 (the drain's)
#
# A.sql and B.sql each hold one `CREATE OR REPLACE FUNCTION nekton_flush(` (the 20-argument form,
# e.g. `sed -n '/^CREATE OR REPLACE FUNCTION nekton_flush(/,/^\$\$;/p' migrations/0027_*.sql`); an
# optional `-- then:` line ends the function's part, and what follows it is run once after both
# are created (e.g. trigger changes both must see). On a private PostgreSQL
# (load-tests/private-pg.sh) with every migration applied, both are created under their own names.
# Each round makes 8,000 running jobs of one batch, each with its 13-byte output chunk and its
# completion (`succeeded`, exited 0), in calls of N jobs, and a procedure flushes them in order,
# the calls alternating between A and B (which goes first alternates by round), each call
# committed (synchronous_commit off: no wait for the disk, the same WAL written). It times each
# call with its commit (clock_timestamp) and prints per round A's and B's mean ms per call and
# B / A, leaving out each variant's first call: a round runs in a new backend, and its first call
# of either variant also fills the caches both then use (≈ 3 % of a round at N=22). A's and B's
# calls are interleaved within milliseconds, so the machine's drift falls on both alike.
set -euo pipefail
usage='usage: flush-ab.sh ROUNDS A.sql B.sql [N]'
rounds=${1:?$usage}
a=${2:?$usage}
b=${3:?$usage}
n=${4:-22}
per=${PER:-8000}
case "$rounds" in '' | *[!0-9]*) echo "flush-ab.sh: ROUNDS is a number, got '$rounds'" >&2; exit 2 ;; esac
case "$n" in '' | *[!0-9]* | 0) echo "flush-ab.sh: N is a positive number, got '$n'" >&2; exit 2 ;; esac
for f in "$a" "$b"; do
    grep -q '^CREATE OR REPLACE FUNCTION nekton_flush(' "$f" || {
        echo "flush-ab.sh: $f holds no 'CREATE OR REPLACE FUNCTION nekton_flush(' at a line's start" >&2
        exit 2
    }
done
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=load-tests/pg-cpu.sh
. "$here/pg-cpu.sh"
schema_pg "$here"
for v in a b; do
    f=$a
    [ "$v" = b ] && f=$b
    sed -n '/^-- then:/q;p' "$f" |
        sed "s/^CREATE OR REPLACE FUNCTION nekton_flush(/CREATE OR REPLACE FUNCTION nekton_flush_$v(/" | q >/dev/null
done
for f in "$a" "$b"; do
    sed -n '/^-- then:/,$p' "$f" | q >/dev/null
done

worker=00000000-0000-0000-0000-000000000001
q >/dev/null <<'EOF'
CREATE TABLE bench_calls (blk integer PRIMARY KEY, variant text, ids uuid[], attempts integer[],
    states text[], retry bigint[], reasons text[], codes integer[], signals integer[], details text[],
    usages text[], tests text[], c_seqs integer[], c_streams smallint[], c_data bytea[]);
CREATE TABLE bench_times (round integer, blk integer, variant text, ms double precision);
CREATE PROCEDURE bench_run(p_round integer, p_worker uuid) LANGUAGE plpgsql AS $$
DECLARE
    c bench_calls;
    t0 timestamptz;
BEGIN
    FOR c IN SELECT * FROM bench_calls ORDER BY blk LOOP
        t0 := clock_timestamp();
        -- Two static calls, not one EXECUTE of a name: a dynamic statement would be parsed and
        -- planned on every call, and that time would be counted in both.
        IF c.variant = 'a' THEN
            PERFORM count(*) FROM nekton_flush_a(p_worker, c.ids, c.attempts, c.states, c.retry,
                c.reasons, c.codes, c.signals, c.details, c.usages, NULL, c.tests, c.ids,
                c.attempts, c.c_seqs, c.c_streams, c.c_data, NULL, '{}', '{}');
        ELSE
            PERFORM count(*) FROM nekton_flush_b(p_worker, c.ids, c.attempts, c.states, c.retry,
                c.reasons, c.codes, c.signals, c.details, c.usages, NULL, c.tests, c.ids,
                c.attempts, c.c_seqs, c.c_streams, c.c_data, NULL, '{}', '{}');
        END IF;
        COMMIT;
        INSERT INTO bench_times VALUES (p_round, c.blk,
            c.variant, extract(epoch FROM clock_timestamp() - t0) * 1000);
    END LOOP;
    COMMIT;
END
$$;
EOF

for r in $(seq 1 "$rounds"); do
    first=a second=b
    [ $((r % 2)) = 0 ] && first=b second=a
    q >/dev/null <<EOF
TRUNCATE bench_calls;
$(flush_calls "$per" "$n" "$worker" k.blk "CASE WHEN k.blk % 2 = 0 THEN '$first' ELSE '$second' END")
VACUUM ANALYZE jobs;
EOF
    q -c "SET synchronous_commit = off" -c "CALL bench_run($r, '$worker')" >/dev/null
    left=$(q -At -c "SELECT count(*) FROM jobs WHERE state = 'running'")
    [ "$left" = 0 ] || { echo "flush-ab.sh: $left jobs still running after round $r" >&2; exit 1; }
    q -At -F ' ' -c "SELECT 'round $r | a: ' || round(avg(ms) FILTER (WHERE variant = 'a')::numeric, 3)
        || ' ms/call | b: ' || round(avg(ms) FILTER (WHERE variant = 'b')::numeric, 3)
        || ' ms/call | b/a: ' || round((avg(ms) FILTER (WHERE variant = 'b')
            / avg(ms) FILTER (WHERE variant = 'a'))::numeric, 3)
        FROM bench_times WHERE round = $r AND blk >= 2"
done
q -At -c "SELECT 'all rounds: median of b/a per round ' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY x)::numeric, 3)
    || ', b below a in ' || count(*) FILTER (WHERE x < 1) || ' of ' || count(*)
    FROM (SELECT avg(ms) FILTER (WHERE variant = 'b') / avg(ms) FILTER (WHERE variant = 'a') AS x
          FROM bench_times WHERE blk >= 2 GROUP BY round) t"
