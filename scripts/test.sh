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
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
echo "== deploy/: Kubernetes schemas and consistency" >&2
bash scripts/check-deploy.sh >/dev/null

# Two test tiers (see services/tests/common/mod.rs):
# - default: everything a plain `cargo test` runs as any user (unit tests, API handler tests, the
#   Wasm backend, the queue, whole processes);
# - root: in each crate with a `root-tests` feature, the `[[test]]` targets that require it
#   (kernel, cgroups, nft, a local registry) and the crate's unit tests again with the feature on
#   (the few root-only unit tests are `ignore`d without it). Crates and targets come from
#   `cargo metadata`, so a new root-only test file needs only its `[[test]]` entry.
# Both always run here, each to the end (--no-fail-fast: one failing test binary does not hide the
# others); each tier's wall time (build included) is printed at the end.
metadata=$(cargo metadata --no-deps --format-version 1 --locked)
root_args=()
while read -r p; do root_args+=(-p "$p"); done < <(
    jq -r '.packages[] | select(.features | has("root-tests")) | .name' <<<"$metadata" | sort -u
)
while read -r t; do root_args+=(--test "$t"); done < <(
    jq -r '.packages[].targets[] | select((.["required-features"] // []) | index("root-tests")) | .name' <<<"$metadata" |
        sort -u
)
if ! printf '%s\n' "${root_args[@]}" | grep -qx -- --test; then
    echo "test.sh: found no root-tier test targets (required-features = [\"root-tests\"]) in cargo metadata" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
times=()
run_tier() {
    local name=$1
    shift
    echo "== cargo test: $name tier" >&2
    local start=$SECONDS
    set +e
    cargo test --locked --no-fail-fast "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    set -e
    times+=("$name tier: $((SECONDS - start)) s (exit $rc)")
    ((rc == 0)) || status=$rc
}
run_tier default --workspace "$@"
run_tier root --features root-tests --lib "${root_args[@]}" "$@"

# The script-driven checks, each to the end like the tiers, each timed.
run_check() {
    local name=$1 script=$2
    echo "== $name (scripts/$script)" >&2
    local start=$SECONDS
    bash "scripts/$script" >&2 || status=$?
    times+=("$name: $((SECONDS - start)) s")
}
# The API against its own OpenAPI document: property-based requests with a token, no 5xx.
run_check "API fuzz" check-api-fuzz.sh
# The generated Python and TypeScript clients: current, type-checked, and working against a server.
run_check "generated clients" check-clients.sh
# `nekton test --junit`: its reports read by a JUnit parser (junitparser).
run_check "JUnit reports" check-junit.sh
# The web console in a real headless Chromium (default tier: needs no root; as root the browser
# runs with --no-sandbox). Screenshots: $NEKTON_ARTIFACTS/nekton-ui-artifacts (default /tmp).
run_check "web console (Chromium)" check-ui.sh

# cargo prints one result line per test binary (the last is often an empty doc-test run): sum them.
passed=$(awk '/^test result:/ {p += $4} END {print p + 0}' "$log")
failed=$(awk '/^test result:/ {f += $6} END {print f + 0}' "$log")
if [ "$status" -eq 0 ]; then
    echo "== the OCI image (scripts/build-image.sh)" >&2
    bash scripts/check-image.sh >&2 || status=$?
fi
for t in "${times[@]}"; do echo "$t"; done
echo "tests: $passed passed, $failed failed"
exit "$status"
