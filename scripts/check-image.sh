#!/usr/bin/env bash
# Checks scripts/build-image.sh: the image builds, builds again to the same digest, and its
# binaries run on its own root (nekton, nft, conntrack, with only the libraries the image holds).
# Uses the debug binary of the test build (a release build is what operators ship; the packing is
# the same).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/nekton/target}"
bin="$CARGO_TARGET_DIR/debug/nekton"
[ -x "$bin" ] || cargo build --locked -p nekton
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
first="$(bash scripts/build-image.sh --binary "$bin" --out "$work/a" --tag check | tail -1)"
second="$(bash scripts/build-image.sh --binary "$bin" --out "$work/b" --tag check | tail -1)"
d1="$(echo "$first" | awk '{print $3}')"
d2="$(echo "$second" | awk '{print $3}')"
if [ -z "$d1" ] || [ "$d1" != "$d2" ]; then
    echo "check-image: two builds gave different digests ($d1, $d2): the image is not reproducible" >&2
    exit 1
fi
umoci unpack --image "$work/a:check" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"
chroot "$rootfs" /usr/bin/nekton --version
chroot "$rootfs" /usr/sbin/nft --version
chroot "$rootfs" /usr/sbin/conntrack --version
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
args, user = cfg["process"]["args"], cfg["process"]["user"]
assert args[0] == "/usr/bin/nekton", f"entrypoint is {args}"
assert (user["uid"], user["gid"]) == (65532, 65532), f"user is {user}"
PY
echo "check-image: reproducible ($d1), binaries run on the image's root"
