#!/usr/bin/env bash
# The writer's flush (`nekton_flush`) by the number of jobs it completes: PostgreSQL's CPU per call
# and per job (issue 15; load-tests/README.md, "The flush's cost per call and per job").
#
#   load-tests/flush-cpu.sh ROUNDS [SIZES]        # SIZES: jobs per flush, default "1 22 64"
#   SQL='ALTER TABLE jobs DISABLE TRIGGER jobs_finished' load-tests/flush-cpu.sh ...   # a knock-out
#
# On a private PostgreSQL (load-tests/private-pg.sh) with every migration applied, each round and
# size flushes 4,000 running jobs of one batch (tenant `default`), each with its 13-byte output
# chunk and its completion (`succeeded`, exited 0), SIZE jobs per call, with pgbench (-M prepared,
# one client, commits durable as the worker's are), reading the CPU of every server process before
# and after (100 Hz ticks: 10 ms over ≈ 0.2–0.4 s per measurement). Each call's arguments are
# prepared beforehand, one row per call, read by primary key with the flush. One line per round:
# per size, the CPU per call and per job.
set -euo pipefail
rounds=${1:?usage: flush-cpu.sh ROUNDS [SIZES]}
sizes=${2:-1 22 64}
per=4000
case "$rounds" in '' | *[!0-9]*) echo "flush-cpu.sh: ROUNDS is a number, got '$rounds'" >&2; exit 2 ;; esac
for n in $sizes; do
    case "$n" in '' | *[!0-9]* | 0) echo "flush-cpu.sh: a size is a positive number, got '$n'" >&2; exit 2 ;; esac
done
command -v pgbench >/dev/null || { echo "flush-cpu.sh: needs pgbench (Debian: postgresql-contrib)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=load-tests/pg-cpu.sh
. "$here/pg-cpu.sh"
schema_pg "$here"
script=$(mktemp /tmp/flush-cpu.XXXXXX.sql)
trap 'rm -f "$script"; "$here/private-pg.sh" stop "$dir"' EXIT
if [ -n "${SQL:-}" ]; then
    q -c "$SQL" >/dev/null
fi
worker=00000000-0000-0000-0000-000000000001
q >/dev/null <<EOF
CREATE TABLE bench_calls (blk bigint PRIMARY KEY, variant text, ids uuid[], attempts integer[], states text[],
    retry bigint[], reasons text[], codes integer[], signals integer[], details text[], usages text[],
    tests text[], c_seqs integer[], c_streams smallint[], c_data bytea[]);
CREATE SEQUENCE bench_blk;
EOF

tick=$(getconf CLK_TCK)
cat >"$script" <<EOF
SELECT nextval('bench_blk') AS b \gset
SELECT count(*) FROM bench_calls c CROSS JOIN LATERAL nekton_flush('$worker', c.ids, c.attempts,
    c.states, c.retry, c.reasons, c.codes, c.signals, c.details, c.usages, NULL, c.tests, c.ids,
    c.attempts, c.c_seqs, c.c_streams, c.c_data, NULL, '{}') f WHERE c.blk = :b;
EOF
for r in $(seq 1 "$rounds"); do
    line="round $r"
    for n in $sizes; do
        calls=$(((per + n - 1) / n))
        # A fresh batch of running jobs and their calls' arguments; the calls number from the
        # sequence's next value.
        q >/dev/null <<EOF
TRUNCATE bench_calls;
$(flush_calls "$per" "$n" "$worker" \
    "(SELECT last_value FROM bench_blk) + k.blk + (SELECT is_called::int FROM bench_blk)" NULL)
VACUUM ANALYZE jobs;
EOF
        # The exited backends (the setup's psql, then pgbench's) are reaped before each reading:
        # one between its exit and its reaping is counted nowhere.
        sleep 0.3
        before=$(pg_cpu)
        pgbench -n -M prepared -c 1 -t "$calls" -h "$dir/run" -U postgres -f "$script" nekton >/dev/null 2>&1 ||
            { echo "flush-cpu.sh: pgbench failed (size $n)" >&2; exit 1; }
        sleep 0.3
        after=$(pg_cpu)
        left=$(q -At -c "SELECT count(*) FROM jobs WHERE state = 'running'")
        [ "$left" = 0 ] || { echo "flush-cpu.sh: $left jobs still running after the flushes of size $n" >&2; exit 1; }
        line="$line | N=$n: $(awk -v t=$((after - before)) -v k="$tick" -v c="$calls" -v p="$per" \
            'BEGIN { printf "%.3f ms/call, %.1f µs/job", t / k / c * 1000, t / k / p * 1e6 }')"
    done
    echo "$line"
done
