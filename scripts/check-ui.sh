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
source scripts/lib.sh
started=$SECONDS
chromium="${NEKTON_CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] || { echo "check-ui: chromium is missing ($chromium): run scripts/setup-test.sh (apt-get install chromium) or set NEKTON_CHROMIUM" >&2; exit 1; }
command -v node >/dev/null 2>&1 || { echo "check-ui: node is missing: run scripts/setup-test.sh (apt-get install nodejs)" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "check-ui: npm is missing: run scripts/setup-test.sh (apt-get install npm)" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 20)) || { echo "check-ui: node $(node --version) is too old: playwright-core needs node 20 or later" >&2; exit 1; }

# Exactly the locked playwright-core (a no-op when node_modules already matches the lockfile).
ensure_npm ui-tests
build_nekton

artifacts="${NEKTON_ARTIFACTS:-/tmp}/nekton-ui-artifacts"
rm -rf "$artifacts"
mkdir -p "$artifacts"
state=$(mktemp -d /tmp/nekton-ui-XXXXXX)
cleanup() {
    stop_serve
    cp "$state/serve.log" "$artifacts/serve.log" 2>/dev/null || true
    rm -rf "$state"
}
trap cleanup EXIT
start_serve check-ui "$state" --slots 4
grep -q "web console: $SERVE_URL/ui/" "$state/serve.log" ||
    { echo "check-ui: nekton serve did not print the console's URL" >&2; exit 1; }
ticker=$("$NEKTON_BIN" --server "$SERVE_URL" --token "$SERVE_TOKEN" module push ui-tests/fixtures/ticker.wat)
fails=$("$NEKTON_BIN" --server "$SERVE_URL" --token "$SERVE_TOKEN" module push ui-tests/fixtures/fails.wat)

set +e
NEKTON_URL="$SERVE_URL" NEKTON_TOKEN="$SERVE_TOKEN" NEKTON_TICKER_DIGEST="$ticker" NEKTON_FAILS_DIGEST="$fails" \
    NEKTON_UI_ARTIFACTS="$artifacts" CHROMIUM="$chromium" node ui-tests/console.test.mjs
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "--- nekton serve log (last 30 lines)" >&2
    tail -30 "$state/serve.log" >&2
fi
echo "check-ui: $((SECONDS - started)) s in all (exit $rc); screenshots and the server log in $artifacts" >&2
exit "$rc"
