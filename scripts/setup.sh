#!/usr/bin/env bash
# Installs what nekton needs to build, run and test on a Debian/Ubuntu machine. Idempotent: it
# installs only what is missing. Run as root (or with sudo available).
set -euo pipefail

need_apt=()
have_pg_binaries() {
    command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null 2>&1
}
have_pg_binaries || need_apt+=(postgresql)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
# The hostile-job tests compile small C probes with `gcc -static` (needs libc.a).
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || compgen -G "/usr/lib/*/libc.a" >/dev/null 2>&1 || need_apt+=(libc6-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# The image tests run a real OCI registry on 127.0.0.1 and build images from a static busybox.
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
# The container benchmark (load-tests containers) runs crun and runc side by side with nekton.
command -v crun >/dev/null 2>&1 || need_apt+=(crun)
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
# Bridge networking of container jobs: the nft JSON interface and conntrack flushes.
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v conntrack >/dev/null 2>&1 || need_apt+=(conntrack)
# scripts/test.sh lists the root-tier test targets from `cargo metadata` with jq.
command -v jq >/dev/null 2>&1 || need_apt+=(jq)

if ((${#need_apt[@]})); then
    echo "setup: installing ${need_apt[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is missing: install Rust 1.95 or newer (https://rustup.rs), then run this again" >&2
    exit 1
fi
if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

# Builds are cached outside the clone so CI and repeated runs reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/nekton/target}"
mkdir -p "$CARGO_TARGET_DIR" 2>/dev/null || true
