#!/usr/bin/env bash
# Builds nekton's OCI image without a container daemon, as an OCI image layout directory.
#
#   scripts/build-image.sh [--binary PATH] [--out DIR] [--tag TAG]
#
# The image holds the `nekton` binary and the two host tools its worker runs (nft for the bridge
# network's table, conntrack for flushing a job's connections), each with exactly the shared
# libraries it links, the CA bundle, and passwd/group entries for root and `nonroot` (65532).
# Nothing else: no shell, no package manager. The default user is nonroot (the API and migrate
# Job run so); the worker's DaemonSet runs it as root, privileged (deploy/kubernetes/worker.yaml).
#
# Reproducible: every file gets the timestamp SOURCE_DATE_EPOCH (default: the last commit's time),
# entries are written in sorted order and the config's dates are fixed, so the same binary and
# host tools give the same image digest (the script prints it).
#
# Push it with skopeo (`skopeo copy oci:DIR:TAG docker://REGISTRY/nekton:TAG`) or load it into a
# nekton worker host with `nekton image import`.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="" out="target-image" tag="latest"
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        *) echo "usage: scripts/build-image.sh [--binary PATH] [--out DIR] [--tag TAG]" >&2; exit 2 ;;
    esac
done

need=()
command -v umoci >/dev/null 2>&1 || need+=(umoci)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if ((${#need[@]})); then
    echo "build-image: installing ${need[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if [ -z "$binary" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/nekton/target}"
    cargo build --release --locked -p nekton
    binary="$CARGO_TARGET_DIR/release/nekton"
fi
[ -x "$binary" ] || { echo "build-image: $binary is not an executable" >&2; exit 1; }

export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
created="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"/{usr/bin,usr/sbin,etc/ssl/certs,tmp,var/lib/nekton}
chmod 1777 "$root/tmp"

# A file and every shared library it links (by ldd), at their own paths.
add_with_libs() {
    local src="$1" dst="$2"
    install -D -m 0755 "$src" "$root$dst"
    ldd "$src" 2>/dev/null | grep -o '/[^ ]*' | sort -u | while read -r lib; do
        [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
}
add_with_libs "$binary" /usr/bin/nekton
add_with_libs "$(command -v nft)" /usr/sbin/nft
add_with_libs "$(command -v conntrack)" /usr/sbin/conntrack
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/var/lib/nekton:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

rm -rf "$out"
umoci init --layout "$out"
umoci new --image "$out:$tag"
umoci unpack --image "$out:$tag" "$work/bundle" >/dev/null
rm -rf "$work/bundle/rootfs"
cp -a "$root" "$work/bundle/rootfs"
umoci repack --image "$out:$tag" --history.created "$created" \
    --history.created_by "scripts/build-image.sh" "$work/bundle"
umoci config --image "$out:$tag" --created "$created" --history.created "$created" \
    --history.created_by "scripts/build-image.sh" \
    --config.entrypoint /usr/bin/nekton --config.user 65532:65532 \
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --config.label "org.opencontainers.image.source=nekton" \
    --config.label "org.opencontainers.image.created=$created"
umoci gc --layout "$out"
digest="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$out/index.json")"
echo "build-image: $out:$tag $digest ($(du -sh "$out" | cut -f1))"
