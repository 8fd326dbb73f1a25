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
# Who killed a test binary: a test binary that dies by SIGKILL (once in CI, never reproduced
# since) is reported below with the kernel's record of the SIGKILLs sent to processes of its name
# — the sender's name and pid, or the OOM killer's — from a tracefs instance of this run that
# records every SIGKILL generated (as root, where tracefs can be mounted; otherwise said once).
sigtrace=""
if [ "$(id -u)" = 0 ]; then
    tracefs=/sys/kernel/tracing
    [ -e "$tracefs/instances" ] || mount -t tracefs nodev "$tracefs" 2>/dev/null || true
    if [ -d "$tracefs/instances" ] && mkdir "$tracefs/instances/nekton-test-$$" 2>/dev/null; then
        sigtrace=$tracefs/instances/nekton-test-$$
        if ! { echo 8192 >"$sigtrace/buffer_size_kb" &&
            echo 'sig == 9' >"$sigtrace/events/signal/signal_generate/filter" &&
            echo 1 >"$sigtrace/events/signal/signal_generate/enable"; } 2>/dev/null; then
            rmdir "$sigtrace" 2>/dev/null || true
            sigtrace=""
        fi
    fi
fi
[ -n "$sigtrace" ] || echo "test.sh: SIGKILLs are not recorded (needs root and tracefs's signal events)" >&2
cleanup() {
    rm -f "$log"
    if [ -n "$sigtrace" ]; then
        echo 0 >"$sigtrace/events/signal/signal_generate/enable" 2>/dev/null || true
        rmdir "$sigtrace" 2>/dev/null || true
    fi
}
trap cleanup EXIT
# For each test binary cargo reports killed by SIGKILL: the recorded SIGKILLs sent to a task of
# its name (a comm is the first 15 bytes of the file name) or to a tokio thread (a kill of a
# thread's id ends its whole process), and the kernel's OOM kills of such tasks.
report_sigkills() {
    local bin comm
    [ -n "$sigtrace" ] || return 0
    { grep -o "process didn't exit successfully: \`[^\`]*\` (signal: 9, SIGKILL" "$log" || true; } |
        sed -E "s/.*\`([^ \`]+).*/\1/" | sort -u | while read -r bin; do
        comm=$(basename "$bin" | cut -c1-15)
        echo "== $comm died by SIGKILL; the SIGKILLs sent to tasks named $comm or tokio-runtime-w (the sender first):" >&2
        grep -E "comm=($comm|tokio-runtime-w) " "$sigtrace/trace" >&2 || echo "   none recorded" >&2
        echo "== the kernel's OOM kills of such tasks:" >&2
        dmesg 2>/dev/null | grep -E "Killed process [0-9]+ \(($comm|tokio-runtime-w)\)" >&2 ||
            echo "   none in the kernel log" >&2
    done
}
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
report_sigkills

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
