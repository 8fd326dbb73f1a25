#!/usr/bin/env bash
# Two versions of the claim function side by side: PostgreSQL's CPU and the latency per call (issue 15;
# load-tests/README.md, "The claim of a lone tenant in one statement (migration 0026)").
#
#   load-tests/claim-cpu.sh ROUNDS A.sql B.sql
#
# A.sql and B.sql each hold one `CREATE OR REPLACE FUNCTION nekton_claim(...)` (e.g. the body of a
# migration from its CREATE on: `sed -n '/^CREATE OR REPLACE FUNCTION/,$p' migrations/0024_*.sql`).
# On a private PostgreSQL (load-tests/private-pg.sh) with every migration applied, both are created
# under their own names, 10,100 queued jobs of one tenant are inserted with their specs, and each
# round runs, for A then B, after putting the jobs back to queued and a VACUUM: 400 claims of 23 (the
# drain's average claim; the queue's dead head grows as in a drain, 9,200 jobs claimed by the end)
# with pgbench (-M prepared, one client, synchronous_commit off), reading the CPU of every server
# process before and after (100 Hz ticks: 0.025 ms per call). One line per round.
set -euo pipefail
rounds=${1:?usage: claim-cpu.sh ROUNDS A.sql B.sql}
a=${2:?usage: claim-cpu.sh ROUNDS A.sql B.sql}
b=${3:?usage: claim-cpu.sh ROUNDS A.sql B.sql}
here=$(cd "$(dirname "$0")" && pwd)
for f in "$a" "$b"; do
    grep -q '^CREATE OR REPLACE FUNCTION nekton_claim(' "$f" || {
        echo "claim-cpu.sh: $f holds no 'CREATE OR REPLACE FUNCTION nekton_claim(' at a line's start" >&2
        exit 2
    }
done
command -v pgbench >/dev/null || { echo "claim-cpu.sh: needs pgbench (Debian: postgresql-contrib)" >&2; exit 2; }

# shellcheck source=load-tests/pg-cpu.sh
. "$here/pg-cpu.sh"
schema_pg "$here"
sed 's/^CREATE OR REPLACE FUNCTION nekton_claim(/CREATE OR REPLACE FUNCTION nekton_claim_a(/' "$a" | q >/dev/null
sed 's/^CREATE OR REPLACE FUNCTION nekton_claim(/CREATE OR REPLACE FUNCTION nekton_claim_b(/' "$b" | q >/dev/null
q >/dev/null <<'EOF'
INSERT INTO jobs (id, tenant_id, queue, max_attempts, run_at)
SELECT gen_random_uuid(), 'default', 'default', 3, now() - interval '1 minute' + g * interval '1 ms'
FROM generate_series(1, 10100) g;
INSERT INTO job_specs (job_id, spec, spec_hash, program)
SELECT id, '{"v":1,"program":{"kind":"module","digest":"sha256:abc"},"args":["hello"]}', '\x00', 'sha256:abc'
FROM jobs;
VACUUM ANALYZE jobs;
VACUUM ANALYZE job_specs;
EOF

tick=$(getconf CLK_TCK)
script=$(mktemp /tmp/claim-cpu.XXXXXX.sql)
trap 'rm -f "$script"; "$here/private-pg.sh" stop "$dir"' EXIT
for r in $(seq 1 "$rounds"); do
    line="round $r"
    for v in a b; do
        q -c "UPDATE jobs SET state = 'queued', attempt = 0, worker_id = NULL, started_at = NULL, \
              lease_expires_at = NULL WHERE state <> 'queued'" -c "VACUUM jobs" >/dev/null
        echo "SELECT count(*) FROM nekton_claim_$v('default', 23, '00000000-0000-0000-0000-000000000001', 30000, 4);" >"$script"
        # The exited backends (the setup's psql, then pgbench's) are reaped before each reading:
        # one between its exit and its reaping is counted nowhere.
        sleep 0.3
        before=$(pg_cpu)
        lat=$(PGOPTIONS='-c synchronous_commit=off' pgbench -n -M prepared -c 1 -t 400 \
            -h "$dir/run" -U postgres -f "$script" nekton 2>/dev/null | awk '/latency average/ {print $4}')
        sleep 0.3
        after=$(pg_cpu)
        [ -n "$lat" ] || { echo "claim-cpu.sh: pgbench of $v failed" >&2; exit 1; }
        line="$line | $v: $(awk -v t=$((after - before)) -v k="$tick" 'BEGIN { printf "%.3f", t / k / 400 * 1000 }') ms CPU/call, latency $lat ms"
    done
    echo "$line"
done
