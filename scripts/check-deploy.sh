#!/usr/bin/env bash
# Validates deploy/kubernetes/ against the Kubernetes API schemas (kubernetes-validate, strict:
# unknown fields are errors) and checks that the objects fit together (deploy/check.py).
# Installs its pinned tools into a venv outside the clone; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${NEKTON_VENV:-/var/cache/nekton/venv-deploy}"
if [ ! -x "$venv/bin/kubernetes-validate" ] || ! cmp -s deploy/requirements.txt "$venv/requirements.txt"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r deploy/requirements.txt
    cp deploy/requirements.txt "$venv/requirements.txt"
fi
# Everything but the Prometheus Operator's ServiceMonitor (a CRD: no schema in the Kubernetes
# release; deploy/check.py checks it against the Service it scrapes).
mapfile -t files < <(ls deploy/kubernetes/*.yaml | grep -v -e kustomization.yaml -e servicemonitor.yaml)
"$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.33.0 "${files[@]}"
"$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.37.0 "${files[@]}"
"$venv/bin/python" deploy/check.py
