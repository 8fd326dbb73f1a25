#!/usr/bin/env bash
# What one piece of the schema costs a drain (issue 15; load-tests/README.md, "The drain's
# PostgreSQL time by backend, the claim's cost per call, and knock-outs at 8109d25"): the same `throughput --queued-first` run on a fresh
# private PostgreSQL (load-tests/private-pg.sh), once as the schema is and once per variant with
# the variant's SQL applied after the migrations (a trigger disabled, an index dropped), the runs
# interleaved over ROUNDS.
#
#   load-tests/knockout.sh ROUNDS NEKTON LOAD_TESTS JOBS 'label=SQL' ['label=SQL' ...]
#
# e.g. load-tests/knockout.sh 3 $T/nekton $T/load-tests 20000 \
#          'no-batch-accounting=ALTER TABLE jobs DISABLE TRIGGER jobs_finished'
#
# A bounding experiment, not a configuration: a variant may break what the product promises (a
# trigger disabled loses its bookkeeping), so it runs only here, on a throwaway server. Prints one
# line per run: the drain's jobs/s and the CPU of PostgreSQL's processes over the drain (every
# process but nekton's and load-tests' is counted by load-tests as "other processes"; on an
# otherwise idle machine that is PostgreSQL), per job. Each run's whole report is kept in
# $OUT (default /tmp/knockout). VERIFY_SAMPLE (default 100: a sample of the stored outputs read
# back) set to 0 reads none, for variants that do not store them (every run then reads none).
set -euo pipefail

rounds=${1:?usage: knockout.sh ROUNDS NEKTON LOAD_TESTS JOBS 'label=SQL' ...}
nekton=${2:?usage: knockout.sh ROUNDS NEKTON LOAD_TESTS JOBS 'label=SQL' ...}
lt=${3:?usage: knockout.sh ROUNDS NEKTON LOAD_TESTS JOBS 'label=SQL' ...}
jobs=${4:?usage: knockout.sh ROUNDS NEKTON LOAD_TESTS JOBS 'label=SQL' ...}
shift 4
[ $# -gt 0 ] || { echo "knockout.sh: give at least one variant, 'label=SQL'" >&2; exit 2; }
for v in "$@"; do
    case "$v" in
    *=*) ;;
    *) echo "knockout.sh: a variant is 'label=SQL', got '$v'" >&2; exit 2 ;;
    esac
done
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/knockout}
verify_sample=${VERIFY_SAMPLE:-100}
case "$verify_sample" in
'' | *[!0-9]*) echo "knockout.sh: VERIFY_SAMPLE is a number of jobs, got '$verify_sample'" >&2; exit 2 ;;
esac
verify_budget=1
[ "$verify_sample" != 0 ] || verify_budget=0
mkdir -p "$out"

run() {
    local label=$1 sql=$2 round=$3 dir url report
    dir=$(mktemp -d /tmp/knockout-pg.XXXXXX)
    rmdir "$dir"
    url=$("$here/private-pg.sh" start "$dir")
    report="$out/$label-$round.txt"
    if ! "$nekton" migrate --database-url "$url" >"$report" 2>&1; then
        "$here/private-pg.sh" stop "$dir"
        echo "knockout.sh: nekton migrate failed; see $report" >&2
        return 1
    fi
    if [ -n "$sql" ] && ! psql "$url" -X -q -v ON_ERROR_STOP=1 -c "$sql" >>"$report" 2>&1; then
        "$here/private-pg.sh" stop "$dir"
        echo "knockout.sh: the SQL of '$label' failed; see $report" >&2
        return 1
    fi
    local rc=0
    "$lt" --database-url "$url" --nekton "$nekton" --settle-secs 2 throughput \
        --throughput-jobs "$jobs" --queued-first --verify-budget-secs "$verify_budget" \
        --verify-sample "$verify_sample" \
        >>"$report" 2>&1 || rc=$?
    "$here/private-pg.sh" stop "$dir"
    if [ "$rc" != 0 ]; then
        echo "knockout.sh: load-tests failed (exit $rc) in '$label' round $round; see $report" >&2
        return 1
    fi
    local rate pg
    rate=$(sed -n 's/^  drain \([0-9]*\) jobs\/s.*/\1/p' "$report")
    pg=$(sed -n 's/.*other processes on the machine \([0-9.]*\) core-s.*/\1/p' "$report")
    if [ -z "$rate" ] || [ -z "$pg" ]; then
        echo "knockout.sh: no drain rate or CPU line in $report (did load-tests' report change?)" >&2
        return 1
    fi
    awk -v l="$label" -v r="$round" -v rate="$rate" -v pg="$pg" -v n="$jobs" \
        'BEGIN { printf "%-28s round %s  drain %6s jobs/s  PostgreSQL %.3f ms/job\n", l, r, rate, pg * 1000 / n }'
}

for round in $(seq 1 "$rounds"); do
    run as-is "" "$round"
    for v in "$@"; do
        run "${v%%=*}" "${v#*=}" "$round"
    done
done
