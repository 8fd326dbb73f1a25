#!/usr/bin/env bash
# The web console (/ui) in a real headless browser: Debian's Chromium driven by playwright-core
# (pinned in ui-tests/package-lock.json; it downloads no browser). Starts a fresh `nekton serve`
# on 127.0.0.1, pushes the two test modules with the CLI, then runs ui-tests/console.test.mjs:
# sign-in, a job run through the form (live log, outcome, bill), the running/finished job in the
# list, a finished job's EventSource (one stream + one 204, then silence), the state and label
# filters, a batch's progress and failed jobs, the image list. Screenshots are kept in
# $NEKTON_ARTIFACTS/nekton-ui-artifacts (default /tmp/nekton-ui-artifacts) and the path printed.
# A missing prerequisite (chromium, node, npm) fails with its name; nothing is skipped.
#
# Network rule: the server and the browser talk only over 127.0.0.1; the browser resolves no
# host name and has a dead proxy for anything else, and the test fails on any request it makes
# to another origin. npm installs from the registry exactly what the lockfile pins.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
chromium="${NEKTON_CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] || { echo "check-ui: chromium is missing ($chromium): run scripts/setup-test.sh (apt-get install chromium) or set NEKTON_CHROMIUM" >&2; exit 1; }
command -v node >/dev/null 2>&1 || { echo "check-ui: node is missing: run scripts/setup-test.sh (apt-get install nodejs)" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "check-ui: npm is missing: run scripts/setup-test.sh (apt-get install npm)" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 20)) || { echo "check-ui: node $(node --version) is too old: playwright-core needs node 20 or later" >&2; exit 1; }

# Exactly the locked playwright-core (a no-op when node_modules already matches the lockfile).
if ! cmp -s ui-tests/package-lock.json ui-tests/node_modules/.package-lock.json.src 2>/dev/null; then
    (cd ui-tests && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
    cp ui-tests/package-lock.json ui-tests/node_modules/.package-lock.json.src
fi

# Always the binary of this checkout (a no-op when it is current).
cargo build -q -p nekton --locked
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/nekton"

artifacts="${NEKTON_ARTIFACTS:-/tmp}/nekton-ui-artifacts"
rm -rf "$artifacts"
mkdir -p "$artifacts"
state=$(mktemp -d /tmp/nekton-ui-XXXXXX)
chmod 0755 "$state"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" --state-dir "$state" --no-bridge-network \
    --allowed-registry 127.0.0.1:1 --slots 4 >"$state/serve.log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    cp "$state/serve.log" "$artifacts/serve.log" 2>/dev/null || true
    rm -rf "$state"
}
trap cleanup EXIT
for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && [ -s "$state/admin.token" ]; then break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$state/serve.log" >&2; echo "check-ui: nekton serve exited" >&2; exit 1; }
    sleep 0.2
done
grep -q "web console: http://127.0.0.1:$port/ui/" "$state/serve.log" ||
    { echo "check-ui: nekton serve did not print the console's URL" >&2; exit 1; }
token=$(cat "$state/admin.token")
server="http://127.0.0.1:$port"
ticker=$("$bin" --server "$server" --token "$token" module push ui-tests/fixtures/ticker.wat)
fails=$("$bin" --server "$server" --token "$token" module push ui-tests/fixtures/fails.wat)

set +e
NEKTON_URL="$server" NEKTON_TOKEN="$token" NEKTON_TICKER_DIGEST="$ticker" NEKTON_FAILS_DIGEST="$fails" \
    NEKTON_UI_ARTIFACTS="$artifacts" CHROMIUM="$chromium" node ui-tests/console.test.mjs
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "--- nekton serve log (last 30 lines)" >&2
    tail -30 "$state/serve.log" >&2
fi
echo "check-ui: $((SECONDS - started)) s in all (exit $rc); screenshots and the server log in $artifacts" >&2
exit "$rc"
