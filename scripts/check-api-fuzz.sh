#!/usr/bin/env bash
# The API against its own OpenAPI document: the document is valid OpenAPI 3.1
# (openapi-spec-validator), passes `redocly lint` with Redocly's recommended rules and no
# warning (examples checked against their schemas; openapi/redocly.yaml, with the findings kept
# on purpose in openapi/.redocly.lint-ignore.yaml) and declares the bearer security scheme; then
# a property-based run (Schemathesis, every check, settings in openapi/schemathesis.toml) against
# a fresh `nekton serve` on loopback with its admin token: no 5xx, every status and response body
# as documented, malformed requests refused, requests the document allows accepted.
# Installs its pinned tools into a venv outside the clone; idempotent.
#
# Network rule: the server only ever talks to loopback here. Image pulls are limited to the
# registry 127.0.0.1:1 (anything else is refused before a connection), bridge networking is off,
# and the webhook endpoints (whose deliveries resolve host names) are left out of the run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
venv="${NEKTON_API_FUZZ_VENV:-/var/cache/nekton/venv-api-fuzz}"
ensure_venv "$venv" openapi/requirements.txt
build_nekton
"$venv/bin/openapi-spec-validator" openapi/openapi.json
ensure_npm openapi/lint
# Redocly's telemetry and update check are off, and where a network namespace can be made the
# linter runs in an empty one, so it cannot reach anything at all.
no_net=()
if unshare -n true 2>/dev/null; then no_net=(unshare -n); elif unshare -rn true 2>/dev/null; then no_net=(unshare -rn); fi
lint=$(cd openapi && REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true "${no_net[@]}" \
    lint/node_modules/.bin/redocly lint openapi.json --config redocly.yaml --format json 2>/dev/null) || true
if ! jq -e '.totals.errors == 0 and .totals.warnings == 0' <<<"$lint" >/dev/null 2>&1; then
    (cd openapi && REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true "${no_net[@]}" \
        lint/node_modules/.bin/redocly lint openapi.json --config redocly.yaml --format stylish) >&2 || true
    echo "check-api-fuzz: redocly lint found problems in openapi/openapi.json (above)" >&2
    exit 1
fi
jq -e '.components.securitySchemes.bearer | .type == "http" and .scheme == "bearer"' openapi/openapi.json >/dev/null ||
    { echo "check-api-fuzz: openapi/openapi.json declares no bearer security scheme" >&2; exit 1; }

state=$(mktemp -d /tmp/nekton-api-fuzz-XXXXXX)
cleanup() {
    stop_serve
    rm -rf "$state"
}
trap cleanup EXIT
start_serve check-api-fuzz "$state" --slots 2
start=$SECONDS
set +e
# The binary bodies' media types are serialized as raw bytes (openapi/fuzz_hooks.py).
PYTHONPATH="$PWD/openapi${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=fuzz_hooks \
"$venv/bin/schemathesis" --config-file openapi/schemathesis.toml run "$SERVE_URL/openapi.json" \
    --header "Authorization: Bearer $SERVE_TOKEN" \
    --checks all \
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
