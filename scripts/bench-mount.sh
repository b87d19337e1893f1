#!/usr/bin/env bash
# Measure the mount against its limits, in one run on this machine, and print
# the figures and ratios the mount issue sets targets for:
#   cold mount (empty cache) vs zcat of every layer   target <= 1.0x
#   warm mount (index cached)                         target <= 50 ms
#   find over the mount vs an extracted tree          target <= 5x first, <= 2x second
#   tar -cf /dev/null of the mount (cold data) vs zcat target <= 1.5x
#   daemon peak RSS                                   target <= 64 MiB
#   index size vs tar size                            target <= 2 %
#
#   scripts/bench-mount.sh [LAYOUT]     (default: the test corpus debian-gzip)
# Needs root and /dev/fuse. Builds the release binary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked -q
bin=$PWD/target/release/ocimount
layout=${1:-}
if [[ -z $layout ]]; then
  tests/images/build.sh target/test-images
  layout=target/test-images/layouts/debian-gzip
fi
layout=$(realpath "$layout")
work=$(mktemp -d /tmp/ocimount-bench.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt" "$work/extracted"
cleanup() {
  "$bin" --cache "$work/cache" umount --lazy "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
time_cmd() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); elapsed "$t0" "$t1"; }

# The layer blobs, bottom first, and how to decompress each.
mapfile -t layers < <(python3 - "$layout" <<'PY'
import json, sys, os
root = sys.argv[1]
def blob(d): return os.path.join(root, "blobs", "sha256", d.split(":")[1])
idx = json.load(open(os.path.join(root, "index.json")))
desc = idx["manifests"][0]
doc = json.load(open(blob(desc["digest"])))
while "manifests" in doc:
    desc = doc["manifests"][0]; doc = json.load(open(blob(desc["digest"])))
for l in doc["layers"]:
    mt = l["mediaType"]
    tool = "zstd -dc" if "zstd" in mt else ("cat" if mt.endswith(".tar") else "gzip -dc")
    print(tool + " " + blob(l["digest"]))
PY
)
zcat_all() { for l in "${layers[@]}"; do $l; done | cat >/dev/null; }

echo "image: $layout (${#layers[@]} layers)"
drop_caches
t_zcat=$(time_cmd zcat_all)
tar_bytes=$(for l in "${layers[@]}"; do $l; done | wc -c)

drop_caches
t_cold=$(time_cmd "$bin" --cache "$work/cache" mount "$layout" "$mnt")
"$bin" --cache "$work/cache" umount "$mnt"
warm=()
for _ in 1 2 3 4 5; do
  warm+=("$(time_cmd "$bin" --cache "$work/cache" mount "$layout" "$mnt")")
  "$bin" --cache "$work/cache" umount "$mnt"
done
t_warm=$(printf '%s\n' "${warm[@]}" | sort -n | sed -n 3p)

# Extracted reference tree for find.
"$bin" --cache "$work/cache" export "$layout" -o - | tar --numeric-owner -xpf - -C "$work/extracted"
drop_caches
t_find_ext1=$(time_cmd find "$work/extracted")
t_find_ext2=$(time_cmd find "$work/extracted")

rm -rf "$work/cache"       # cold data cache for the read test
"$bin" --cache "$work/cache" mount "$layout" "$mnt"
pid=$("$bin" --cache "$work/cache" mounts | awk -F'\t' '{print $3}' | sed 's/pid //')
drop_caches
t_find1=$(time_cmd find "$mnt")
t_find2=$(time_cmd find "$mnt")
t_tar=$(time_cmd sh -c "tar -cf - -C \"$mnt\" . | cat > /dev/null")
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
anon_kb=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status")
"$bin" --cache "$work/cache" umount "$mnt"
index_bytes=$(find "$work/cache/layers" -name index -printf '%s\n' | awk '{s+=$1} END {print s}')

printf '\n%-44s %10s %10s %8s\n' "measure" "ocimount" "peer" "ratio"
printf '%-44s %9ss %9ss %8s\n' "cold mount vs zcat of all layers" "$t_cold" "$t_zcat" "$(ratio "$t_cold" "$t_zcat")x"
printf '%-44s %9ss %10s %8s\n' "warm mount (median of 5)" "$t_warm" "-" "-"
printf '%-44s %9ss %9ss %8s\n' "find, first walk (vs extracted tree)" "$t_find1" "$t_find_ext1" "$(ratio "$t_find1" "$t_find_ext1")x"
printf '%-44s %9ss %9ss %8s\n' "find, second walk (vs extracted tree)" "$t_find2" "$t_find_ext2" "$(ratio "$t_find2" "$t_find_ext2")x"
printf '%-44s %9ss %9ss %8s\n' "tar -cf /dev/null, cold data (vs zcat)" "$t_tar" "$t_zcat" "$(ratio "$t_tar" "$t_zcat")x"
printf '%-44s %8s MiB (anonymous %s MiB)\n' "daemon peak RSS" "$((rss_kb / 1024))" "$((anon_kb / 1024))"
printf '%-44s %10s %10s %7s%%\n' "index size vs tar size" "$index_bytes" "$tar_bytes" "$(python3 -c "print(f'{100*$index_bytes/$tar_bytes:.2f}')")"
