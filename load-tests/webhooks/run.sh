#!/usr/bin/env bash
# The cost of the jobs_finished trigger (migration 0004) on the queue's hot statements, in SQL
# alone: the worker's complete statement for 150 jobs in four variants (trigger disabled; no
# webhooks for the tenant; every job in a batch; one endpoint, i.e. 150 events per statement)
# and the claim statement for 32 jobs with and without the trigger. Runs on a throwaway
# PostgreSQL (../private-pg.sh) with the repository's migrations; prints ms per statement.
#
#   load-tests/webhooks/run.sh [REPS]        # default 5 interleaved runs of each variant
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
reps=${1:-5}
dir=$(mktemp -d /tmp/nekton-webhook-bench-XXXXXX)
chmod 0755 "$dir"   # PostgreSQL's account must reach its directory when this runs as root
trap '"$here/../private-pg.sh" stop "$dir/pg"; rm -rf "$dir"' EXIT
url=$("$here/../private-pg.sh" start "$dir/pg")
for f in "$here"/../../migrations/*.sql; do psql "$url" -q -v ON_ERROR_STOP=1 -f "$f" >/dev/null; done
psql "$url" -q -c "CREATE TABLE bench_res (variant text, rep int, ms float8)"
for _ in $(seq 1 "$reps"); do
    for v in notrig plain batch hooked; do
        extra=()
        [ "$v" = notrig ] && extra=(-v notrig=1)
        PGOPTIONS="-c bench.variant=complete-$v" psql "$url" -q -v variant="$v" "${extra[@]}" \
            -f "$here/complete.sql" >/dev/null 2>&1
    done
    for v in notrig trig; do
        extra=()
        [ "$v" = notrig ] && extra=(-v notrig=1)
        PGOPTIONS="-c bench.variant=claim-$v" psql "$url" -q "${extra[@]}" \
            -f "$here/claim.sql" >/dev/null 2>&1
    done
done
psql "$url" -c "SELECT variant, count(*) AS statements,
    round(percentile_cont(0.25) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p25_ms,
    round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p50_ms,
    round(avg(ms)::numeric, 2) AS mean_ms
    FROM bench_res GROUP BY variant ORDER BY 1"
