#!/usr/bin/env bash
# The generated API clients, proven against a live server:
#  1. regenerates both clients from openapi/openapi.json into a temporary directory and fails if
#     the committed copies (openapi/clients/python/nekton_client, openapi/clients/typescript/
#     schema.d.ts) differ — run scripts/gen-clients.sh after changing the API;
#  2. type-checks the TypeScript smoke test with the generated types (`tsc --noEmit`, strict);
#  3. starts a fresh `nekton serve` on loopback and runs the Python and the TypeScript smoke tests,
#     which use only the generated code: upload a module, submit with labels and an
#     Idempotency-Key, follow the SSE log to `exit`, read the record, list with a label filter and
#     a cursor, cancel a running job, submit a batch and read its status.
# Installs its pinned tools (openapi/clients/requirements.txt, typescript/package-lock.json) outside
# the clone's tracked files; idempotent. Needs python3, node and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
for tool in python3 node npm jq curl; do
    command -v "$tool" >/dev/null || { echo "check-clients: $tool is missing (install it: apt-get install $tool)" >&2; exit 1; }
done
venv="${NEKTON_CLIENTS_VENV:-/var/cache/nekton/venv-clients}"

work=$(mktemp -d /tmp/nekton-clients-XXXXXX)
chmod 0755 "$work" # PostgreSQL's account must reach $work/state
cleanup() {
    stop_serve
    rm -rf "$work"
}
trap cleanup EXIT

bash scripts/gen-clients.sh "$work/gen"
stale=0
diff -r -q -x __pycache__ -x .ruff_cache openapi/clients/python/nekton_client "$work/gen/python/nekton_client" >&2 || stale=1
cmp -s openapi/clients/typescript/schema.d.ts "$work/gen/typescript/schema.d.ts" || { echo "openapi/clients/typescript/schema.d.ts differs" >&2; stale=1; }
if [ "$stale" -ne 0 ]; then
    echo "check-clients: the committed clients are not what openapi/openapi.json generates: run scripts/gen-clients.sh and commit the result" >&2
    exit 1
fi
(cd openapi/clients/typescript && npx --no-install tsc --noEmit -p .)

build_nekton
python3 openapi/clients/fixtures.py "$work/fixtures"
start_serve check-clients "$work/state" --slots 4
export NEKTON_URL="$SERVE_URL" NEKTON_TOKEN="$SERVE_TOKEN" FIXTURES="$work/fixtures"
rc=0
(cd openapi/clients/python && PYTHONPATH=. "$venv/bin/python" smoke.py) || rc=1
(cd openapi/clients/typescript && rm -rf build && npx --no-install tsc -p . && node build/smoke.js) || rc=1
if [ "$rc" -ne 0 ]; then
    echo "--- nekton serve log (last 50 lines)" >&2
    tail -50 "$work/state/serve.log" >&2
fi
exit "$rc"
