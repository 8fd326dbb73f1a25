#!/usr/bin/env bash
# PostgreSQL's work per job, statement by statement (issue 15, part 2; load-tests/README.md,
# "PostgreSQL work per job").
#
#   load-tests/pg-work.sh DIR LOAD_TESTS [load-tests arguments ...]
#
# Starts a private PostgreSQL in DIR (load-tests/private-pg.sh) with pg_stat_statements (every
# statement, nested ones inside functions and triggers included, with planning), runs
#   LOAD_TESTS --database-url URL <arguments>
# against it, then prints, divided by the jobs the run created (rows of `jobs`):
#   - per statement: calls, execution + planning ms, rows, WAL bytes (top-level statements; the
#     nested ones — inside nekton_claim and the triggers — are listed after them, their cost is
#     already included in their caller's line);
#   - per table: rows inserted / updated (of which HOT) / deleted, index count;
#   - PostgreSQL's CPU time over the whole run (every process of the private server, exited
#     backends included through the postmaster's children's time), and its WAL bytes.
# The figures cover the whole load-tests run (server start, warm-up and verification reads
# included), so compare runs of the same command. Stops and removes DIR afterwards unless KEEP=1.
# PG_SETTINGS adds server settings for an A/B run, e.g. PG_SETTINGS="-c autovacuum=off".
set -euo pipefail

dir=${1:?usage: pg-work.sh DIR LOAD_TESTS [args ...]}
lt=${2:?usage: pg-work.sh DIR LOAD_TESTS [args ...]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)

url=$("$here/private-pg.sh" start "$dir" -c shared_preload_libraries=pg_stat_statements \
    -c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on \
    -c pg_stat_statements.max=5000 ${PG_SETTINGS:-})
cleanup() { [ "${KEEP:-0}" = 1 ] || "$here/private-pg.sh" stop "$dir"; }
trap cleanup EXIT
sock="$dir/run"
q() { psql -h "$sock" -U postgres -d nekton -X -q -v ON_ERROR_STOP=1 "$@"; }
q -c 'CREATE EXTENSION pg_stat_statements'

tick=$(getconf CLK_TCK)
pg_cpu() {
    # utime + stime of every process of the server, plus the postmaster's reaped children.
    local pm total=0 pid f
    pm=$(head -1 "$dir/data/postmaster.pid")
    for pid in $pm $(pgrep -P "$pm"); do
        f=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        set -- $f
        total=$((total + ${12} + ${13}))
        [ "$pid" = "$pm" ] && total=$((total + ${14} + ${15}))
    done
    echo "$total"
}
wal() { q -At -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"; }

q -c 'SELECT pg_stat_statements_reset()' >/dev/null
cpu0=$(pg_cpu)
wal0=$(wal)
"$lt" --database-url "$url" "$@"
sleep 1
cpu1=$(pg_cpu)
wal1=$(wal)
jobs=$(q -At -c 'SELECT count(*) FROM jobs')
echo
echo "== PostgreSQL work per job ($jobs jobs in \`jobs\` after the run)"
echo "PostgreSQL CPU: $(echo "scale=4; ($cpu1 - $cpu0) * 1000 / $tick / $jobs" | bc) core-ms per job" \
    "($(echo "scale=2; ($cpu1 - $cpu0) / $tick" | bc) core-s in all); WAL: $(( (wal1 - wal0) / jobs )) bytes per job"
q -v jobs="$jobs" <<'SQL'
\pset footer off
\echo
\echo Top-level statements (each line includes what it ran nested), per job; calls/job >= 0.001:
SELECT round(calls::numeric / :jobs, 3) AS calls,
       round(((total_exec_time + total_plan_time) / :jobs)::numeric, 4) AS ms,
       round((rows::numeric / :jobs), 2) AS rows,
       round(wal_bytes / :jobs, 0) AS wal_b,
       round(((shared_blks_hit + shared_blks_read)::numeric / :jobs), 1) AS bufs,
       left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS statement
FROM pg_stat_statements
WHERE toplevel AND calls::numeric / :jobs >= 0.001
ORDER BY total_exec_time + total_plan_time DESC LIMIT 40;
\echo
\echo Nested statements (inside nekton_claim and the triggers), per job:
SELECT round(calls::numeric / :jobs, 3) AS calls,
       round(((total_exec_time + total_plan_time) / :jobs)::numeric, 4) AS ms,
       round((rows::numeric / :jobs), 2) AS rows,
       round(wal_bytes / :jobs, 0) AS wal_b,
       round(((shared_blks_hit + shared_blks_read)::numeric / :jobs), 1) AS bufs,
       left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS statement
FROM pg_stat_statements
WHERE NOT toplevel AND calls::numeric / :jobs >= 0.001
ORDER BY total_exec_time + total_plan_time DESC LIMIT 25;
\echo
\echo Totals per job (top-level): statements, execution + planning ms, WAL bytes:
SELECT round(sum(calls)::numeric / :jobs, 2) AS statements,
       round((sum(total_exec_time + total_plan_time) / :jobs)::numeric, 4) AS ms,
       round(sum(wal_bytes) / :jobs, 0) AS wal_b
FROM pg_stat_statements WHERE toplevel;
\echo
\echo Tables, per job:
SELECT s.relname AS table,
       round(s.n_tup_ins::numeric / :jobs, 2) AS ins,
       round(s.n_tup_upd::numeric / :jobs, 2) AS upd,
       round(s.n_tup_hot_upd::numeric / :jobs, 2) AS hot,
       round(s.n_tup_del::numeric / :jobs, 2) AS del,
       (SELECT count(*) FROM pg_index i WHERE i.indrelid = s.relid) AS indexes,
       s.autovacuum_count AS autovacuums, s.autoanalyze_count AS autoanalyzes
FROM pg_stat_user_tables s
WHERE s.n_tup_ins + s.n_tup_upd + s.n_tup_del > 0
ORDER BY s.n_tup_ins + s.n_tup_upd + s.n_tup_del DESC;
SQL
