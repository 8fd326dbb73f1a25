#!/usr/bin/env bash
# `nekton test --junit` against a live server, its reports read by a JUnit parser (junitparser,
# pinned in scripts/junit/requirements.txt): examples/suite.yaml (all passed, exit 0) and a suite
# that fails one case and skips the next (exit 1). Installs its venv outside the clone
# (/var/cache/nekton/venv-junit); idempotent. Needs python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "check-junit: $tool is missing (install it: apt-get install $tool)" >&2; exit 1; }
done
venv="${NEKTON_JUNIT_VENV:-/var/cache/nekton/venv-junit}"
ensure_venv "$venv" scripts/junit/requirements.txt

work=$(mktemp -d /tmp/nekton-junit-XXXXXX)
chmod 0755 "$work" # PostgreSQL's account must reach $work/state
cleanup() {
    stop_serve
    rm -rf "$work"
}
trap cleanup EXIT

build_nekton
start_serve check-junit "$work/state" --slots 2
export NEKTON_TOKEN="$SERVE_TOKEN"

"$NEKTON_BIN" test --server "$SERVE_URL" --junit "$work/passing.xml" examples/suite.yaml

cp examples/echo.wat "$work/"
cat >"$work/failing.yaml" <<'SUITE'
module: echo.wat
tests:
  stop_on_first_failure: true
  cases:
    - {name: right, stdin: hi, expect: {stdout: hi}}
    - {name: wrong, stdin: hi, expect: {stdout: bye}}
    - {name: after, stdin: hi, expect: {stdout: hi}}
SUITE
rc=0
"$NEKTON_BIN" test --server "$SERVE_URL" --junit "$work/failing.xml" "$work/failing.yaml" || rc=$?
if [ "$rc" -ne 1 ]; then
    echo "check-junit: nekton test exited $rc for a suite with a failing case (want 1)" >&2
    exit 1
fi
"$venv/bin/python" scripts/junit/check.py "$work/passing.xml" "$work/failing.xml"
