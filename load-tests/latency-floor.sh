#!/usr/bin/env bash
# The latency floor of one job on this machine (load-tests/README.md, "Latency floor"): what one
# WAL flush costs (pg_test_fsync), and a job's chain of commits run back to back by one client
# (pgbench, one connection, Unix socket) on a private PostgreSQL with the embedded server's
# durability settings (fsync on, synchronous_commit on).
#
#   load-tests/latency-floor.sh [SECONDS per test, default 10]
set -euo pipefail
secs=${1:-10}
here=$(cd "$(dirname "$0")" && pwd)
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
dir=$(mktemp -d /var/tmp/nekton-floor-XXXXXX)
chmod 0755 "$dir"
trap '"$here/private-pg.sh" stop "$dir/pg" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

echo "== pg_test_fsync (8 kB writes, $dir) =="
"$bindir/pg_test_fsync" -s 3 -f "$dir/fsync-test" | sed -n '/one 8kB write/,/^$/p'

url=$("$here/private-pg.sh" start "$dir/pg")
psql "$url" -qc "CREATE TABLE floor_jobs (id bigserial PRIMARY KEY, state text, spec text);
                 CREATE TABLE floor_chunks (job bigint, seq int, data bytea, PRIMARY KEY (job, seq));"
for script in one-commit chain-3-durable chain-claim-async; do
    echo "== $script (${secs} s) =="
    "$bindir/pgbench" -n -c 1 -T "$secs" -f "$here/floor/$script.sql" "$url" 2>&1 |
        grep -E 'latency average|number of transactions actually processed'
done
