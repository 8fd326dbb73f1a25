#!/usr/bin/env bash
# The API against its own OpenAPI document: the document is valid OpenAPI 3.1
# (openapi-spec-validator) and declares the bearer security scheme; then a property-based run
# (Schemathesis) against a fresh `nekton serve` on loopback with its admin token, where every
# generated request must get an answer that is not a 5xx.
# Installs its pinned tools into a venv outside the clone; idempotent.
#
# Network rule: the server only ever talks to loopback here. Image pulls are limited to the
# registry 127.0.0.1:1 (anything else is refused before a connection), bridge networking is off,
# and the webhook endpoints (whose deliveries resolve host names) are left out of the run.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${NEKTON_API_FUZZ_VENV:-/var/cache/nekton/venv-api-fuzz}"
if [ ! -x "$venv/bin/schemathesis" ] || ! cmp -s openapi/requirements.txt "$venv/requirements.txt"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r openapi/requirements.txt
    cp openapi/requirements.txt "$venv/requirements.txt"
fi
# Always the binary of this checkout (a no-op when it is current).
cargo build -q -p nekton --locked
bin="${CARGO_TARGET_DIR:-target}/debug/nekton"
"$venv/bin/openapi-spec-validator" openapi/openapi.json
jq -e '.components.securitySchemes.bearer | .type == "http" and .scheme == "bearer"' openapi/openapi.json >/dev/null ||
    { echo "check-api-fuzz: openapi/openapi.json declares no bearer security scheme" >&2; exit 1; }

state=$(mktemp -d /tmp/nekton-api-fuzz-XXXXXX)
chmod 0755 "$state"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" --state-dir "$state" --no-bridge-network \
    --allowed-registry 127.0.0.1:1 --slots 2 >"$state/serve.log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$state"
}
trap cleanup EXIT
for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && [ -s "$state/admin.token" ]; then break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$state/serve.log" >&2; echo "check-api-fuzz: nekton serve exited" >&2; exit 1; }
    sleep 0.2
done
token=$(cat "$state/admin.token")
start=$SECONDS
set +e
# The binary bodies' media types are serialized as raw bytes (openapi/fuzz_hooks.py).
PYTHONPATH="$PWD/openapi${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=fuzz_hooks \
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error \
    --max-examples "${NEKTON_API_FUZZ_EXAMPLES:-25}" \
    --generation-deterministic \
    --request-timeout 20 \
    --exclude-path-regex '^/v1/webhooks' \
    --exclude-path-regex '^/v1/tokens/\{id\}$' \
    --report-dir "$state/report" \
    --no-color
rc=$?
set -e
echo "check-api-fuzz: schemathesis took $((SECONDS - start)) s (exit $rc)" >&2
if [ "$rc" -ne 0 ]; then
    echo "--- nekton serve log (last 50 lines)" >&2
    tail -50 "$state/serve.log" >&2
fi
exit "$rc"
