#!/usr/bin/env bash
# The project's test command (README, CI): installs prerequisites, checks formatting and lints,
# then runs every test against real PostgreSQL (an embedded server the tests start themselves)
# and the real Wasm backend.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --workspace --locked "$@"
