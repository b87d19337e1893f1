#!/usr/bin/env bash
# One command from a fresh machine: install what is needed, build ocimount,
# and run the main job on the sample image shipped in sample/image:
# inspect it, mount it, read from the mount, unmount.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh main
cargo build --release --locked
bin=target/release/ocimount
cache=$(mktemp -d /tmp/ocimount-cache.XXXXXX)
mnt=$(mktemp -d /tmp/ocimount-mnt.XXXXXX)
cleanup() {
  "$bin" --cache "$cache" umount "$mnt" 2>/dev/null || true
  rmdir "$mnt" 2>/dev/null || true
  rm -rf "$cache"
}
trap cleanup EXIT
set -x
"$bin" --cache "$cache" inspect sample/image
"$bin" --cache "$cache" ls -l sample/image /etc
"$bin" --cache "$cache" mount sample/image "$mnt"
cat "$mnt/etc/ocimount-sample-platform" "$mnt/etc/motd"
ls -l "$mnt/bin" | head -5
"$bin" --cache "$cache" mounts
"$bin" --cache "$cache" umount "$mnt"
