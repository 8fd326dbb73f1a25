#!/usr/bin/env bash
# Regenerates the committed API clients from openapi/openapi.json:
#   openapi/clients/python/nekton_client   (openapi-python-client, pinned in openapi/clients/requirements.txt)
#   openapi/clients/typescript/schema.d.ts (openapi-typescript, pinned in its package.json / package-lock.json)
# Run it after changing the API (after `nekton openapi > openapi/openapi.json`); scripts/check-clients.sh
# fails while the committed copies differ from what this produces.
#   scripts/gen-clients.sh [OUTDIR]   # OUTDIR: write there instead of in place (the check uses it)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
out="${1:-openapi/clients}"
venv="${NEKTON_CLIENTS_VENV:-/var/cache/nekton/venv-clients}"
ensure_venv "$venv" openapi/clients/requirements.txt
ts=openapi/clients/typescript
ensure_npm "$ts"
spec=$(realpath openapi/openapi.json)
mkdir -p "$out/python" "$out/typescript"
out=$(realpath "$out")
# The generator's formatting step (ruff) comes from the same venv, so the output is reproducible.
(cd "$out/python" && PATH="$venv/bin:$PATH" openapi-python-client generate --path "$spec" \
    --config "$OLDPWD/openapi/clients/python-config.yaml" --meta none --output-path nekton_client --overwrite \
    >/dev/null && rm -rf nekton_client/.ruff_cache)
(cd "$ts" && npx --no-install openapi-typescript "$spec" -o "$out/typescript/schema.d.ts" >/dev/null 2>&1) ||
    { echo "gen-clients: openapi-typescript failed on $spec" >&2; exit 1; }
