#!/usr/bin/env bash
# PostgreSQL's CPU over one drain, by the role of each backend (issue 15; load-tests/README.md, "What
# the completion's rows cost: a bound, and the drain's CPU by backend").
#
#   load-tests/backend-cpu.sh NEKTON LOAD_TESTS JOBS ['SQL']
#
# Runs `throughput --queued-first` with JOBS jobs on a fresh private PostgreSQL
# (load-tests/private-pg.sh), SQL (optional: a knock-out, as in knockout.sh) applied after
# `nekton migrate`, and samples every client backend every 0.2 s: its CPU (utime + stime from /proc)
# and its query (pg_stat_activity). Each backend is named by the query it showed most — `claim`
# (nekton_claim), `flush` (nekton_flush: the writer lanes together) or `other` (the API's
# connections: the submission, the benchmark's polls) — and its CPU from its first sample to its last
# is summed per name, in core-seconds and per job. The claim and the flush run during the drain only;
# `other` covers the whole run. Reads no output back (the knock-outs may not store it). Prints the
# drain's line of the report, then one line per name; the report is kept as $OUT/backend-cpu.txt
# (default /tmp).
set -euo pipefail
nekton=${1:?usage: backend-cpu.sh NEKTON LOAD_TESTS JOBS ['SQL']}
lt=${2:?usage: backend-cpu.sh NEKTON LOAD_TESTS JOBS ['SQL']}
jobs=${3:?usage: backend-cpu.sh NEKTON LOAD_TESTS JOBS ['SQL']}
sql=${4:-}
case "$jobs" in
'' | *[!0-9]*) echo "backend-cpu.sh: JOBS is a number, got '$jobs'" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=load-tests/pg-cpu.sh
. "$here/pg-cpu.sh"
out=${OUT:-/tmp}
mkdir -p "$out"
report=$out/backend-cpu.txt
samples=$(mktemp /tmp/backend-cpu.XXXXXX)
dir=$(mktemp -d /tmp/backend-cpu-pg.XXXXXX)
rmdir "$dir"
url=$("$here/private-pg.sh" start "$dir")
trap 'rm -f "$samples"; "$here/private-pg.sh" stop "$dir"' EXIT
"$nekton" migrate --database-url "$url" >"$report" 2>&1 ||
    { echo "backend-cpu.sh: nekton migrate failed; see $report" >&2; exit 1; }
if [ -n "$sql" ] && ! psql "$url" -X -q -v ON_ERROR_STOP=1 -c "$sql" >>"$report" 2>&1; then
    echo "backend-cpu.sh: the SQL failed; see $report" >&2
    exit 1
fi
"$lt" --database-url "$url" --nekton "$nekton" --settle-secs 2 throughput --throughput-jobs "$jobs" \
    --queued-first --verify-budget-secs 0 --verify-sample 0 >>"$report" 2>&1 &
run=$!
while kill -0 "$run" 2>/dev/null; do
    psql "$url" -X -At -F'|' -c "SELECT pid, left(regexp_replace(query, '\s+', ' ', 'g'), 200) \
        FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()" \
        2>/dev/null | while IFS='|' read -r pid query; do
        read -r u s _ < <(proc_times "$pid") || continue
        echo "$pid|$((u + s))|$query"
    done >>"$samples"
    sleep 0.2
done
rc=0
wait "$run" || rc=$?
if [ "$rc" != 0 ]; then
    echo "backend-cpu.sh: load-tests failed (exit $rc); see $report" >&2
    exit 1
fi
grep -E '^  drain ' "$report" || { echo "backend-cpu.sh: no drain line in $report" >&2; exit 1; }
awk -F'|' -v tick="$(getconf CLK_TCK)" -v jobs="$jobs" '
    NF >= 3 {
        pid = $1
        if (!(pid in first)) first[pid] = $2
        last[pid] = $2
        role = ($3 ~ /nekton_claim/) ? "claim" : ($3 ~ /nekton_flush/) ? "flush" : "other"
        seen[pid, role]++
    }
    END {
        split("claim flush other", names, " ")
        for (pid in first) {
            best = "other"; n = -1
            for (i = 1; i <= 3; i++) if (seen[pid, names[i]] > n) { n = seen[pid, names[i]]; best = names[i] }
            cpu[best] += (last[pid] - first[pid]) / tick
        }
        for (i = 1; i <= 3; i++)
            printf "%-6s %6.2f core-s  %6.1f µs/job\n", names[i], cpu[names[i]], cpu[names[i]] / jobs * 1e6
    }' "$samples"
