#!/usr/bin/env bash
# Regenerates the committed API clients from openapi/openapi.json:
#   openapi/clients/python/nekton_client   (openapi-python-client, pinned in openapi/clients/requirements.txt)
#   openapi/clients/typescript/schema.d.ts (openapi-typescript, pinned in its package.json / package-lock.json)
# Run it after changing the API (after `nekton openapi > openapi/openapi.json`); scripts/check-clients.sh
# fails while the committed copies differ from what this produces.
#   scripts/gen-clients.sh [OUTDIR]   # OUTDIR: write there instead of in place (the check uses it)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-openapi/clients}"
venv="${NEKTON_CLIENTS_VENV:-/var/cache/nekton/venv-clients}"
req=openapi/clients/requirements.txt
if [ ! -x "$venv/bin/openapi-python-client" ] || ! cmp -s "$req" "$venv/requirements.txt"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    cp "$req" "$venv/requirements.txt"
fi
ts=openapi/clients/typescript
if ! cmp -s "$ts/package-lock.json" "$ts/node_modules/.nekton-installed-lock"; then
    (cd "$ts" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$ts/package-lock.json" "$ts/node_modules/.nekton-installed-lock"
fi
spec=$(realpath openapi/openapi.json)
mkdir -p "$out/python" "$out/typescript"
out=$(realpath "$out")
# The generator's formatting step (ruff) comes from the same venv, so the output is reproducible.
(cd "$out/python" && PATH="$venv/bin:$PATH" openapi-python-client generate --path "$spec" \
    --config "$OLDPWD/openapi/clients/python-config.yaml" --meta none --output-path nekton_client --overwrite \
    >/dev/null && rm -rf nekton_client/.ruff_cache)
(cd "$ts" && npx --no-install openapi-typescript "$spec" -o "$out/typescript/schema.d.ts" >/dev/null 2>&1) ||
    { echo "gen-clients: openapi-typescript failed on $spec" >&2; exit 1; }
