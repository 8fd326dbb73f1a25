#!/usr/bin/env bash
# What the test command needs beyond scripts/setup.sh (sourced by scripts/test.sh). Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

need_apt=()
# The hostile-job tests compile small C probes with `gcc -static` (needs libc.a).
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || compgen -G "/usr/lib/*/libc.a" >/dev/null 2>&1 || need_apt+=(libc6-dev)
# The image tests run a real OCI registry on 127.0.0.1 and build images from a static busybox.
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
# The container benchmark (load-tests containers) runs crun and runc side by side with nekton.
command -v crun >/dev/null 2>&1 || need_apt+=(crun)
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
# scripts/check-image.sh packs the image with umoci; scripts/check-deploy.sh needs Python's venv.
command -v umoci >/dev/null 2>&1 || need_apt+=(umoci)
# scripts/check-api-fuzz.sh waits for the server with curl.
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# scripts/check-ui.sh drives the web console in Debian's Chromium with playwright-core (npm).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# services/tests/pgbouncer.rs runs the API and a worker through Debian's PgBouncer.
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || need_apt+=(pgbouncer)
# services/tests/grading_containers.rs builds a compiler image from the host's tcc and C library.
command -v tcc >/dev/null 2>&1 || need_apt+=(tcc)
# services/tests/metrics.rs runs `promtool check metrics` on the exposition.
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)

if ((${#need_apt[@]})); then
    echo "setup-test: installing ${need_apt[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# services/tests/wasi_testsuite.rs builds the wasi-testsuite's Rust tests for wasm32-wasip1; the
# component tests (wasm-backend/tests/components.rs, services/tests/components.rs) build a guest
# for wasm32-wasip2.
if command -v rustup >/dev/null 2>&1; then
    for target in wasm32-wasip1 wasm32-wasip2; do
        rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target"
    done
fi
