#!/usr/bin/env bash
# The project's test command (README, CI): installs prerequisites, checks formatting and lints,
# then runs every test against real PostgreSQL (an embedded server the tests start themselves)
# and the real Wasm backend.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-test.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== deploy/: Kubernetes schemas and consistency" >&2
bash scripts/check-deploy.sh >/dev/null
echo "== cargo test" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# cargo prints one result line per test binary (the last is often an empty doc-test run): sum them.
passed=$(awk '/^test result:/ {p += $4} END {print p + 0}' "$log")
failed=$(awk '/^test result:/ {f += $6} END {print f + 0}' "$log")
if [ "$status" -eq 0 ]; then
    echo "== the OCI image (scripts/build-image.sh)" >&2
    bash scripts/check-image.sh >&2 || status=$?
fi
echo "tests: $passed passed, $failed failed"
exit "$status"
