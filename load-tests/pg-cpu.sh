# Sourced by claim-cpu.sh, flush-cpu.sh, flush-ab.sh and backend-cpu.sh (not run): a private
# PostgreSQL with nekton's schema, the CPU its processes spend, and the flush benchmarks' calls.
#
#   schema_pg HERE        # starts one in a new temporary $dir (load-tests/private-pg.sh), applies every
#                         # migration with psql, defines q (psql on it) and stops it at exit
#   proc_times PID        # a process's ticks of CPU from /proc/PID/stat: utime stime cutime cstime
#   pg_cpu                # ticks of CPU of the server so far: utime + stime (+ reaped children's) of
#                         # the postmaster and every process it started
#   flush_calls PER N WORKER BLK VARIANT
#                         # prints the SQL that makes PER running jobs of WORKER in one new batch
#                         # (tenant `default`) with their specs, and fills bench_calls (blk, variant,
#                         # then nekton_flush's arguments) with their flushes, N jobs per call, each
#                         # job with its 13-byte output chunk and its completion (`succeeded`, exited
#                         # 0); BLK and VARIANT are SQL expressions of the call's number from 0, k.blk
#
# A backend between its exit and its reaping is counted nowhere: wait a moment (0.3 s) after a
# client ends before reading.

schema_pg() {
    local here=$1 m
    dir=$(mktemp -d /tmp/pg-cpu.XXXXXX)
    rmdir "$dir"
    "$here/private-pg.sh" start "$dir" >/dev/null
    # shellcheck disable=SC2064
    trap "\"$here/private-pg.sh\" stop \"$dir\"" EXIT
    q() { psql -h "$dir/run" -U postgres -d nekton -X -q -v ON_ERROR_STOP=1 "$@"; }
    for m in "$here"/../migrations/*.sql; do
        q -1 -f "$m" >/dev/null
    done
}

proc_times() {
    local f
    f=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    f=${f##*) }
    # shellcheck disable=SC2086
    set -- $f
    echo "${12} ${13} ${14} ${15}"
}

pg_cpu() {
    local pm total=0 pid u s cu cs
    pm=$(head -1 "$dir/data/postmaster.pid")
    for pid in $pm $(cat "/proc/$pm/task/$pm/children"); do
        read -r u s cu cs < <(proc_times "$pid") || continue
        total=$((total + u + s + cu + cs))
    done
    echo "$total"
}

flush_calls() {
    local per=$1 n=$2 worker=$3 blk=$4 variant=$5
    cat <<EOF
WITH b AS (
    INSERT INTO batches (id, tenant_id, total, spec_hash) VALUES (gen_random_uuid(), 'default', $per, '\x00')
    RETURNING id
), j AS (
    INSERT INTO jobs (id, tenant_id, state, queue, max_attempts, attempt, worker_id, started_at,
                      lease_expires_at, batch_id)
    SELECT gen_random_uuid(), 'default', 'running', 'default', 1, 1, '$worker', now(),
           now() + interval '1 hour', b.id
    FROM b, generate_series(1, $per)
    RETURNING id
), s AS (
    INSERT INTO job_specs (job_id, spec, spec_hash, program)
    SELECT id, '{"v":1,"program":{"kind":"module","digest":"sha256:abc"}}', '\x00', 'sha256:abc' FROM j
    RETURNING job_id
)
INSERT INTO bench_calls
SELECT $blk, $variant,
       array_agg(k.job_id), array_agg(1), array_agg('succeeded'::text), array_agg(NULL::bigint),
       array_agg('exited'::text), array_agg(0), array_agg(NULL::integer), array_agg(NULL::text),
       array_agg('{"wall_ms": 1, "stdout_bytes": 13}'::text), array_agg(NULL::text), array_agg(0),
       array_agg(1::smallint), array_agg(convert_to(E'hello, world\\n', 'UTF8'))
FROM (SELECT job_id, ((row_number() OVER (ORDER BY job_id) - 1) / $n)::int AS blk FROM s) k
GROUP BY k.blk;
EOF
}
