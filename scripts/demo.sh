#!/usr/bin/env bash
# The main job: builds nekton, starts the service on the embedded PostgreSQL, runs a demo Wasm job
# through the HTTP API (its output and record are printed), then keeps serving on
# http://127.0.0.1:8080 until Ctrl-C. Extra arguments go to `nekton serve`. Installs only what
# running needs (scripts/setup.sh); the test tools come with scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --locked -p nekton
bin="$CARGO_TARGET_DIR/debug/nekton"
echo "demo: the nekton CLI is $bin — in another shell: export PATH=\"$(dirname "$bin"):\$PATH\"; nekton run examples/hello.wat" >&2
exec "$bin" serve --demo "$@"
