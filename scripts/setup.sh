#!/usr/bin/env bash
# Installs what nekton needs to build and run on a Debian/Ubuntu machine (scripts/demo.sh). The
# test command adds its own tools (scripts/setup-test.sh). Idempotent: it installs only what is
# missing. Run as root (or with sudo available).
set -euo pipefail

need_apt=()
have_pg_binaries() {
    command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null 2>&1
}
have_pg_binaries || need_apt+=(postgresql)
# Rust links through the system C compiler.
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# The container backend's init/exec helper is C built by container-backend/build.rs: it needs the
# kernel's uapi headers (linux/*.h).
[ -e /usr/include/linux/memfd.h ] || need_apt+=(linux-libc-dev)
# Bridge networking of container jobs (on by default in `serve` as root): the nft JSON interface
# and conntrack flushes.
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
